"""lightkit's figures: the helpers every PNG is drawn with, and the LR schedule plot.

One style for every PNG (monitors, LR range test, schedule plot, search report): matplotlib's object
API on the Agg canvas (:func:`new_figure`), so drawing needs no display and never changes pyplot's
global backend or state, and :func:`save_figure` at 100 dpi. matplotlib is imported only when a figure
is drawn (it costs seconds to import).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightkit._factory import unbound_parameters

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["axes_grid", "color_cycle", "new_figure", "plot_schedule", "save_figure", "trace_schedule"]

DPI = 100
"""Resolution of every PNG lightkit writes."""


def new_figure(width: float, height: float, layout: Literal["fixed", "constrained"] = "fixed",
               hspace: float = 0.5) -> Figure:
    """A matplotlib figure on the Agg canvas (no display, pyplot's global state untouched).

    ``layout="fixed"`` (default) sets margins in inches once (room for tick labels, axis labels and
    titles) instead of matplotlib's constrained layout, which measures every text box of every panel
    before drawing: that halves the end-of-fit drawing time of the monitors (benchmarks/RESULTS.md).
    ``"constrained"`` keeps matplotlib's layout engine, for small one-off figures. ``hspace``: the
    gap between rows of panels, as a fraction of a panel's height (fixed layout).

    Raises:
        ValueError: an unknown ``layout``.
    """
    if layout not in ("fixed", "constrained"):
        raise ValueError(f"new_figure: layout={layout!r} is not one of 'fixed', 'constrained'.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained" if layout == "constrained" else None)
    FigureCanvasAgg(fig)
    if layout == "fixed":
        fig.subplots_adjust(
            left=0.8 / width,
            right=1 - 0.2 / width,
            bottom=0.6 / height,
            top=1 - 0.4 / height,
            hspace=hspace,
            wspace=0.25,
        )
    return fig


def axes_grid(
    n: int, max_cols: int = 3, panel: tuple[float, float] = (4.2, 3.4)
) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n`` panels, at most ``max_cols`` per row (unused cells hidden).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"axes_grid: n={n} panels; give at least 1.")
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = new_figure(max(6.0, panel[0] * cols), panel[1] * rows, layout="constrained")
    flat = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def color_cycle() -> list[str]:
    """The colours of matplotlib's default property cycle, for series that must match across panels."""
    import matplotlib

    return list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) at :data:`DPI` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path

SchedulerFactory = Callable[..., LRScheduler]


def _momentum(group: dict[str, Any]) -> float | None:
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def _accepted(factory: Callable[..., Any]) -> set[str]:
    """Keyword names a scheduler factory still accepts (LightningCLI partials included)."""
    return unbound_parameters(factory)


def _title(obj: Any) -> str:
    if isinstance(obj, type):
        return obj.__name__
    if isinstance(obj, LRScheduler):
        return type(obj).__name__
    # functools.partial(cls, ...) or LightningCLI's partial(instantiator, cls, **init_args)
    for candidate in (getattr(obj, "func", None), *getattr(obj, "args", ())):
        if isinstance(candidate, type):
            return candidate.__name__
    return "schedule"


def trace_schedule(
    scheduler_or_factory: LRScheduler | SchedulerFactory,
    total_steps: int,
    steps_per_epoch: int | None = None,
    optimizer: Optimizer | None = None,
) -> tuple[list[list[float]], list[list[float | None]], list[str]]:
    """LR and momentum of every group at each optimizer step, without training and without side effects.

    A scheduler instance is stepped and then restored (its ``state_dict`` and its optimizer's
    hyperparameters), so it can be traced before ``fit``. A factory (a scheduler class, a
    ``functools.partial`` or a LightningCLI ``lr_scheduler`` callable) is called with ``optimizer``
    (default: SGD, ``lr=1``, ``momentum=0.9``, one group: the plot then shows the multiplier) and with
    ``total_steps`` / ``steps_per_epoch`` when it takes them.

    Args:
        scheduler_or_factory: the scheduler, or a callable building one from an optimizer.
        total_steps: optimizer steps to trace, > 0.
        steps_per_epoch: optimizer steps per epoch; required for schedulers stepped per epoch
            (``interval`` attribute ``"epoch"`` or absent, as Lightning assumes for torch's own).
        optimizer: optimizer for a factory; ignored for an instance.

    Returns:
        ``(lrs, momenta, names)``: ``lrs[t][i]`` is group ``i``'s LR used at step ``t``, ``momenta``
        likewise (``None`` for groups without momentum), ``names`` the groups' ``name`` keys.

    Raises:
        ValueError: ``total_steps <= 0`` or a per-epoch scheduler without ``steps_per_epoch``.
        TypeError: a ``ReduceLROnPlateau``, which depends on validation metrics and has no fixed schedule.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"plot_schedule: total_steps={total_steps!r} must be a positive int (optimizer "
                         "steps).")
    if isinstance(scheduler_or_factory, LRScheduler):
        scheduler = scheduler_or_factory
        optimizer = scheduler.optimizer
    else:
        if optimizer is None:
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
        accepted = _accepted(scheduler_or_factory)
        kwargs: dict[str, int] = {}
        if "total_steps" in accepted:
            kwargs["total_steps"] = total_steps
        if "steps_per_epoch" in accepted and steps_per_epoch is not None:
            kwargs["steps_per_epoch"] = steps_per_epoch
        scheduler = None
    saved_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if scheduler is None:
        scheduler = scheduler_or_factory(optimizer, **kwargs)  # type: ignore[operator]
        saved_state = None
    else:
        saved_state = scheduler.state_dict()
    try:
        if isinstance(scheduler, ReduceLROnPlateau):
            raise TypeError(
                f"plot_schedule: {type(scheduler).__name__} reacts to validation metrics and has no schedule "
                f"to draw before training; plot the LearningRateMonitor log instead."
            )
        interval = getattr(scheduler, "interval", "epoch")
        every = 1
        if interval == "epoch":
            if steps_per_epoch is None:
                raise ValueError(
                    f"plot_schedule: {type(scheduler).__name__} steps once per epoch; pass steps_per_epoch."
                )
            every = steps_per_epoch
        lrs: list[list[float]] = []
        momenta: list[list[float | None]] = []
        with warnings.catch_warnings():
            # No optimizer.step() is taken here, on purpose: torch would warn about the order.
            warnings.simplefilter("ignore", UserWarning)
            for step in range(total_steps):
                lrs.append([float(g["lr"]) for g in optimizer.param_groups])
                momenta.append([_momentum(g) for g in optimizer.param_groups])
                if (step + 1) % every == 0:
                    scheduler.step()
    finally:
        if saved_state is not None:
            scheduler.load_state_dict(saved_state)
        for group, saved in zip(optimizer.param_groups, saved_groups, strict=True):
            params = group["params"]
            group.clear()
            group.update(saved, params=params)
    names = [str(g.get("name", f"group {i}")) for i, g in enumerate(optimizer.param_groups)]
    return lrs, momenta, names


def plot_schedule(
    scheduler_or_factory: LRScheduler | SchedulerFactory,
    total_steps: int,
    path: str | Path,
    steps_per_epoch: int | None = None,
    optimizer: Optimizer | None = None,
    log_lr: bool = False,
) -> Path:
    """Save a PNG of the LR of every parameter group (top) and momentum / beta1 (bottom) per step.

    Args:
        scheduler_or_factory: a scheduler, or a factory as in :func:`trace_schedule`.
        total_steps: optimizer steps to draw.
        path: output PNG file; parent folders are created.
        steps_per_epoch: optimizer steps per epoch (needed for per-epoch schedulers).
        optimizer: optimizer for a factory (default: SGD, ``lr=1``, ``momentum=0.9``).
        log_lr: logarithmic LR axis.

    Returns:
        The path written.

    Raises:
        ValueError, TypeError: see :func:`trace_schedule`.
    """
    lrs, momenta, names = trace_schedule(scheduler_or_factory, total_steps, steps_per_epoch, optimizer)
    has_momentum = any(m is not None for row in momenta for m in row)
    fig = new_figure(7, 5.5 if has_momentum else 3.5, layout="constrained")
    axes = fig.subplots(2 if has_momentum else 1, 1, sharex=True, squeeze=False)[:, 0]
    steps = range(total_steps)
    for i, name in enumerate(names):
        axes[0].plot(steps, [row[i] for row in lrs], label=name)
    axes[0].set_ylabel("learning rate")
    if log_lr:
        axes[0].set_yscale("log")
    if len(names) > 1:
        axes[0].legend(fontsize="small", ncol=2)
    axes[0].set_title(_title(scheduler_or_factory))
    if has_momentum:
        # Momentum is the same for all groups under lightkit's schedulers; draw each distinct curve once.
        drawn: list[list[float | None]] = []
        for i, name in enumerate(names):
            curve = [row[i] for row in momenta]
            if curve[0] is None or curve in drawn:
                continue
            drawn.append(curve)
            axes[1].plot(steps, curve, label=name)
        axes[1].set_ylabel("momentum / beta1")
    axes[-1].set_xlabel("optimizer step")
    return save_figure(fig, path)
