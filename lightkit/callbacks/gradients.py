"""``GradientMonitor``: per-layer gradient norms and histograms and the update/weight ratio every n steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.optim import Optimizer

from lightkit.callbacks._monitor import (
    check_pattern,
    log_image,
    log_scalars,
    monitor_dir,
    new_figure,
    paused,
    save_figure,
    wandb_histograms,
)
from lightkit.functional.stats import (
    grad_norms,
    histogram,
    histogram_edges,
    select_params,
    to_host,
    update_ratios,
)

__all__ = ["GradientMonitor"]

HEALTHY_UPDATE_RATIO = 1e-3
"""CS231n's rule of thumb for ``||lr * update|| / ||w||``: much lower, the LR is too low; much higher, too
high."""


def _layer(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


class GradientMonitor(Callback):
    """Gradient norms and histograms per layer and the update/weight ratio (CS231n,
    https://cs231n.github.io/neural-networks-3/#ratio).

    On logging steps (``global_step % every_n_steps == 0``) ``on_before_optimizer_step`` measures the
    gradients (after AMP unscaling, before clipping) and copies the watched weights;
    ``on_train_batch_end`` compares them with the weights after the step: ``||w_after - w_before|| /
    ||w_before||`` is the update/weight ratio, healthy around 1e-3 whatever the optimizer. Everything of
    one logging step is read back with one host sync. Rank zero only (DDP gradients are already
    averaged); skipped during the sanity check and while ``lightkit_pause_monitor`` is True.

    The weight copy costs one model's worth of watched-parameter memory on logging steps only;
    ``update_ratio=False`` avoids it. At the end of ``fit`` (and with :meth:`save`) a PNG
    ``<dirpath>/gradients.png`` shows the ratio per layer over time, the gradient norms of the last
    logging step and the global norm over time; with a ``WandbLogger`` it is logged as an image and
    the gradient histograms as ``wandb.Histogram``.

    Args:
        every_n_steps: logging interval in optimizer steps (>= 1).
        params: ``"weights"`` (parameters with ndim >= 2: conv and linear kernels),
            ``"all"`` (every parameter) or a regular expression searched in parameter names.
        bins: gradient histogram bins per parameter; 0 disables histograms.
        update_ratio: measure the update/weight ratio (copies the watched weights on logging steps).
        dirpath: folder for the PNG; default ``<trainer.log_dir or default_root_dir>/monitor``.

    Raises:
        ValueError: ``every_n_steps`` < 1, ``bins`` < 0, ``params`` an invalid regex; in ``setup``:
            ``params`` matches no parameter.

    Logged keys (``<layer>`` is the parameter name without a trailing ``.weight``):
    ``monitor/<layer>/grad_norm``, ``monitor/<layer>/update_ratio`` (both 0 while the layer is frozen),
    ``monitor/grad_norm`` (global L2 norm over all parameters, as ``clip_grad_norm_`` computes it) and, on
    W&B,
    ``monitor/<layer>/grad_hist``.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        params: str = "weights",
        bins: int = 64,
        update_ratio: bool = True,
        dirpath: str | None = None,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"GradientMonitor: every_n_steps={every_n_steps} must be >= 1 (optimizer "
                             "steps); 100 is the default.")
        if bins < 0:
            raise ValueError(f"GradientMonitor: bins={bins} must be >= 0 (0 disables histograms).")
        check_pattern("GradientMonitor", "params", params, ("weights", "all"))
        self.every_n_steps = every_n_steps
        self.params = params
        self.bins = bins
        self.update_ratio = update_ratio
        self.dirpath = dirpath
        self.names: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.last_hists: dict[str, tuple[list[float], list[float]]] = {}
        self._watched: list[Tensor] = []
        self._all: list[Tensor] = []
        self._pending: dict[str, Any] | None = None
        self._dir = Path(dirpath) if dirpath else Path("monitor")
        self._step = -1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # A new fit starts afresh; a resumed one gets its state from load_state_dict, which runs after setup.
        self.history, self.last_hists, self._pending, self._step = [], {}, None, -1
        self._dir = monitor_dir(trainer, self.dirpath)
        watched = select_params(pl_module, self.params)
        if not watched:
            raise ValueError(
                f"GradientMonitor: params={self.params!r} matches no parameter of "
                f"{type(pl_module).__name__}; "
                f"use 'weights', 'all' or a regex over named_parameters() names."
            )
        self.names = [_layer(n) for n, _ in watched]
        self._watched = [p for _, p in watched]
        self._all = list(pl_module.parameters())

    # -- hooks -------------------------------------------------------------------------------
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        step = trainer.global_step
        if (
            not trainer.is_global_zero or trainer.sanity_checking or paused(trainer, pl_module)
            or step % self.every_n_steps != 0 or step == self._step or not self._watched
        ):
            return
        self._step = step
        with torch.no_grad():
            norms = grad_norms(self._watched)
            all_norms = grad_norms(self._all)
            hists = (
                [histogram(p.grad, self.bins) for p in self._watched if p.grad is not None]
                if self.bins
                else []
            )
            has_grad = [p.grad is not None for p in self._watched]
            before = [p.detach().clone() for p in self._watched] if self.update_ratio else []
        self._pending = {"step": step, "norms": norms, "global": all_norms.norm().reshape(1), "hists": hists,
                         "has_grad": has_grad, "before": before}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        device = pending["norms"].device
        parts = [pending["norms"], pending["global"].to(device)]
        if pending["before"]:
            with torch.no_grad():
                parts.append(update_ratios(pending["before"], self._watched).to(device))
        if pending["hists"]:
            parts.append(torch.stack(pending["hists"]).to(device))
        host = to_host(parts)  # the one sync of this logging step
        step = pending["step"]
        norms, global_norm = host[0], host[1][0]
        ratios = host[2] if pending["before"] else [float("nan")] * len(self.names)
        metrics = {"monitor/grad_norm": global_norm}
        for name, norm, ratio in zip(self.names, norms, ratios, strict=True):
            metrics[f"monitor/{name}/grad_norm"] = norm
            metrics[f"monitor/{name}/update_ratio"] = ratio
        hists: dict[str, tuple[list[float], list[float]]] = {}
        if pending["hists"]:
            row = self.bins + 2
            with_grad = [n for n, has in zip(self.names, pending["has_grad"], strict=True) if has]
            flat = host[-1]
            for i, name in enumerate(with_grad):
                values = flat[i * row:(i + 1) * row]
                hists[name] = (values[:self.bins], histogram_edges(values[-2], values[-1], self.bins))
        log_scalars(
            trainer,
            metrics,
            step,
            wandb_histograms(trainer, {f"monitor/{n}/grad_hist": h for n, h in hists.items()}),
        )
        self.history.append({"step": step, "grad_norm": global_norm, "norms": norms, "ratios": ratios})
        self.last_hists = hists

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            path = self.save(self._dir / "gradients.png")
            log_image(trainer, "monitor/gradients", path, trainer.global_step)

    def save(self, path: str | Path) -> Path:
        """Draw the update/weight ratios over time, the last gradient norms and the global norm to a PNG.

        Raises:
            RuntimeError: nothing recorded yet (no logging step has run).
        """
        if not self.history:
            raise RuntimeError("GradientMonitor.save: nothing recorded yet; fit for at least one logging "
                               "step first.")
        steps = [h["step"] for h in self.history]
        fig = new_figure(14, 8)
        grid = fig.add_gridspec(2, 2)
        ax = fig.add_subplot(grid[0, :])
        for i, name in enumerate(self.names):
            values = [h["ratios"][i] if h["ratios"][i] > 0 else float("nan") for h in self.history]
            ax.plot(
                steps,
                values,
                marker="." if len(steps) < 30 else None,
                lw=1,
                label=name if len(self.names) <= 12 else None,
            )
        ax.axhline(HEALTHY_UPDATE_RATIO, color="k", ls="--", lw=1, label="1e-3 (healthy)")
        ax.set(yscale="log", title="update / weight ratio per layer", xlabel="step", ylabel="||dw|| / ||w||")
        ax.legend(fontsize=6, ncol=2, loc="best")
        ax = fig.add_subplot(grid[1, 0])
        last = self.history[-1]["norms"]
        ax.bar(range(len(last)), [v if v > 0 else math.nan for v in last])
        ax.set(
            yscale="log", title=f"gradient norm per layer (step {steps[-1]})", xlabel="layer", ylabel="||g||"
        )
        ax = fig.add_subplot(grid[1, 1])
        ax.plot(steps, [h["grad_norm"] for h in self.history], marker=".")
        ax.set(yscale="log", title="global gradient norm", xlabel="step", ylabel="||g||")
        return save_figure(fig, path)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "step": self._step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._step = int(state_dict.get("step", -1))
