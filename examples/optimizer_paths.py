"""Paths of SGD, SGD + momentum, Nesterov, Adagrad, RMSprop and Adam on a ravine and on a saddle point.

The lecture's optimizer animations as two PNGs, drawn with torch's own optimizers on 2-D toy losses:

* **ravine** ``f(x, y) = 0.05 x^2 + 5 y^2``: curvature 100x larger across the valley than along it.
  Plain SGD bounces between the walls and crawls along the floor; momentum averages the bouncing
  out and builds speed along the floor; Nesterov's look-ahead damps the overshoot.
* **saddle** ``f(x, y) = x^2 + y^4 / 4 - y^2 / 2``: a saddle at the origin, minima at ``(0, +-1)``.
  Starting almost on the ridge (``y = 1e-3``), SGD lingers near the saddle because the gradient
  there is tiny; the adaptive methods (Adagrad, RMSprop, Adam) rescale it and escape at once.

Run ``python examples/optimizer_paths.py --out figures/`` (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from lightkit.plotting import new_figure, save_figure

Loss = Callable[[Tensor], Tensor]
OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


def ravine(p: Tensor) -> Tensor:
    """Elongated quadratic valley; minimum at the origin. ``p`` has shape (2,) or (..., 2)."""
    return 0.05 * p[..., 0] ** 2 + 5.0 * p[..., 1] ** 2


def saddle(p: Tensor) -> Tensor:
    """Saddle at the origin, minima at ``(0, +-1)`` with value -1/4."""
    return p[..., 0] ** 2 + p[..., 1] ** 4 / 4.0 - p[..., 1] ** 2 / 2.0


# Learning rates chosen per surface so each method shows its typical behaviour, not tuned to win.
OPTIMIZERS: dict[str, dict[str, OptimizerFactory]] = {
    "ravine": {
        "SGD": partial(torch.optim.SGD, lr=0.19),
        "SGD + momentum": partial(torch.optim.SGD, lr=0.04, momentum=0.9),
        "Nesterov": partial(torch.optim.SGD, lr=0.04, momentum=0.9, nesterov=True),
        "Adagrad": partial(torch.optim.Adagrad, lr=1.5),
        "RMSprop": partial(torch.optim.RMSprop, lr=0.1, alpha=0.9),
        "Adam": partial(torch.optim.Adam, lr=0.2),
    },
    "saddle": {
        "SGD": partial(torch.optim.SGD, lr=0.05),
        "SGD + momentum": partial(torch.optim.SGD, lr=0.02, momentum=0.9),
        "Nesterov": partial(torch.optim.SGD, lr=0.02, momentum=0.9, nesterov=True),
        "Adagrad": partial(torch.optim.Adagrad, lr=0.5),
        "RMSprop": partial(torch.optim.RMSprop, lr=0.05, alpha=0.9),
        "Adam": partial(torch.optim.Adam, lr=0.05),
    },
}
SURFACES: dict[str, tuple[Loss, tuple[float, float], tuple[float, float, float, float]]] = {
    # loss, start, (xmin, xmax, ymin, ymax) of the plot
    "ravine": (ravine, (-9.0, 1.0), (-10.0, 2.0, -1.5, 1.5)),
    "saddle": (saddle, (1.5, 1e-3), (-1.0, 2.0, -1.6, 1.6)),
}


def optimize_path(loss: Loss, start: tuple[float, float], make: OptimizerFactory, steps: int) -> Tensor:
    """Positions visited by an optimizer minimising ``loss`` from ``start``: shape (steps + 1, 2)."""
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = make([p])
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss(p).backward()
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path)


def plot_paths(surface: str, out_dir: Path, steps: int = 100) -> Path:
    """Draw all optimizers' paths on one surface's contour plot; returns the PNG path."""
    loss, start, (x0, x1, y0, y1) = SURFACES[surface]
    xs, ys = torch.linspace(x0, x1, 300, dtype=torch.float64), torch.linspace(y0, y1, 200, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    fig = new_figure(9, 4.5, layout="constrained")
    ax = fig.subplots()
    ax.contour(xs.numpy(), ys.numpy(), loss(grid).numpy(), levels=30, cmap="Greys", linewidths=0.6)
    for name, make in OPTIMIZERS[surface].items():
        path = optimize_path(loss, start, make, steps).numpy()
        ax.plot(path[:, 0], path[:, 1], marker=".", markersize=2.5, linewidth=1.0, label=name)
    ax.plot(*start, marker="o", color="black")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=f"{surface}: {steps} steps from {start}")
    ax.legend(fontsize="small", loc="lower right")
    return save_figure(fig, out_dir / f"optimizer_paths_{surface}.png")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="folder for the PNGs")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per path")
    args = parser.parse_args(argv)
    paths = [plot_paths(surface, args.out, args.steps) for surface in SURFACES]
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
