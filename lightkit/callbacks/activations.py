"""``ActivationMonitor``: per-layer activation statistics and histograms every n training steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

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
    ACTIVATION_STATS,
    ActivationRecorder,
    histogram_edges,
    select_modules,
    to_host,
)

__all__ = ["ActivationMonitor"]

_MAX_HIST_PANELS = 16


class ActivationMonitor(Callback):
    """Activation distributions per layer, the first check of CS231n's babysitting
    (https://cs231n.github.io/neural-networks-3/).

    Forward hooks are registered only on logging steps (in ``on_train_batch_start`` when
    ``global_step % every_n_steps == 0``) and removed in ``on_train_batch_end``; the statistics are
    computed on the device inside the hooks and read back with one host sync per logging step. Only
    rank zero records; nothing runs during the sanity check or while ``lightkit_pause_monitor`` is True
    on the module or trainer (the LR range test sets it).

    At the end of ``fit`` (and on demand with :meth:`save`) the last logging step is drawn to
    ``<dirpath>/activations.png``: mean +- std and dead / saturated fractions per layer, and the
    histograms of up to 16 layers. With a ``WandbLogger`` the histograms are logged as
    ``wandb.Histogram`` and the PNG as an image.

    Args:
        every_n_steps: logging interval in optimizer steps (>= 1). Hooks cost a few reductions per
            recorded layer, on logging steps only (1 % of steps at the default 100).
        layers: ``"activations"`` (every ReLU / GELU / SiLU / Tanh / Sigmoid ... module) or a regular
            expression searched in the names of ``pl_module.named_modules()``, e.g. ``"encoder\\.layer\\d$"``
            for residual stage outputs. Activations called as functions (``F.relu``) have no module:
            pick the modules around them with a regex.
        bins: histogram bins per layer; 0 disables histograms.
        dirpath: folder for the PNG; default ``<trainer.log_dir or default_root_dir>/monitor``.

    Raises:
        ValueError: ``every_n_steps`` < 1, ``bins`` < 0, ``layers`` an invalid regex; in ``setup``:
            ``layers`` matches no module.

    Logged keys (``<layer>`` is the module name; a module called twice per forward adds ``<layer>:1``):
    ``monitor/<layer>/act_mean``, ``act_std``, ``act_zero`` (fraction of exact zeros), ``act_dead``
    (fraction of units zero for the whole batch), ``act_saturated`` (tanh / sigmoid layers only) and,
    on W&B, ``act_hist``.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        layers: str = "activations",
        bins: int = 64,
        dirpath: str | None = None,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"ActivationMonitor: every_n_steps={every_n_steps} must be >= 1 (optimizer "
                             "steps); 100 is the default.")
        if bins < 0:
            raise ValueError(f"ActivationMonitor: bins={bins} must be >= 0 (0 disables histograms).")
        check_pattern("ActivationMonitor", "layers", layers, ("activations",))
        self.every_n_steps = every_n_steps
        self.layers = layers
        self.bins = bins
        self.dirpath = dirpath
        self.last: dict[str, Any] = {}
        self._recorder: ActivationRecorder | None = None
        self._dir = Path(dirpath) if dirpath else Path("monitor")
        self._step = -1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # A new fit starts afresh; a resumed one gets its state from load_state_dict, which runs after setup.
        self.last, self._step = {}, -1
        self._dir = monitor_dir(trainer, self.dirpath)
        modules = select_modules(pl_module, self.layers)
        if not modules:
            raise ValueError(
                f"ActivationMonitor: layers={self.layers!r} matches no module of {type(pl_module).__name__}; "
                f"give a regex over its named_modules() names (e.g. 'encoder\\.layer\\d$')."
            )
        self._recorder = ActivationRecorder(modules, bins=self.bins)

    # -- hooks -------------------------------------------------------------------------------
    def _due(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        step = trainer.global_step
        return (
            self._recorder is not None and trainer.is_global_zero and not trainer.sanity_checking
            and not paused(trainer, pl_module) and step % self.every_n_steps == 0 and step != self._step
        )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._due(trainer, pl_module) and self._recorder is not None:
            self._step = trainer.global_step
            self._recorder.attach()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._recorder is None or not self._recorder.attached:
            return
        self._recorder.remove()
        self._collect(trainer, self._step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._recorder is not None:
            self._recorder.remove()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._recorder is not None:
            self._recorder.remove()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.last:
            path = self.save(self._dir / "activations.png")
            log_image(trainer, "monitor/activations", path, trainer.global_step)

    # -- work --------------------------------------------------------------------------------
    def _collect(self, trainer: Trainer, step: int) -> None:
        recorder = self._recorder
        if recorder is None or not recorder.stats:
            return
        names = list(recorder.stats)
        parts = [torch.stack([recorder.stats[n] for n in names])]
        hist_names = [n for n in names if n in recorder.hists]
        if hist_names:
            parts.append(torch.stack([recorder.hists[n] for n in hist_names]).to(parts[0].device))
        host = to_host(parts)  # the one sync of this logging step
        width = len(ACTIVATION_STATS)
        stats = {n: host[0][i * width:(i + 1) * width] for i, n in enumerate(names)}
        hists: dict[str, tuple[list[float], list[float]]] = {}
        if hist_names:
            row = self.bins + 2
            for i, n in enumerate(hist_names):
                values = host[1][i * row:(i + 1) * row]
                hists[n] = (values[:self.bins], histogram_edges(values[-2], values[-1], self.bins))
        metrics = {
            f"monitor/{n}/act_{stat}": value
            for n, row_values in stats.items()
            for stat, value in zip(ACTIVATION_STATS, row_values, strict=True)
            if not (stat == "saturated" and recorder.kinds[n] not in ("tanh", "sigmoid"))
        }
        extra = wandb_histograms(trainer, {f"monitor/{n}/act_hist": h for n, h in hists.items()})
        log_scalars(trainer, metrics, step, extra)
        self.last = {"step": step, "kinds": dict(recorder.kinds), "stats": stats, "hists": hists}

    def save(self, path: str | Path) -> Path:
        """Draw the last logging step (statistics per layer and histograms) to a PNG at ``path``.

        Raises:
            RuntimeError: nothing recorded yet (no logging step has run).
        """
        if not self.last:
            raise RuntimeError("ActivationMonitor.save: nothing recorded yet; fit for at least one logging "
                               "step first.")
        stats, hists, kinds = self.last["stats"], self.last["hists"], self.last["kinds"]
        names = list(stats)
        shown = [n for n in names if n in hists]
        if len(shown) > _MAX_HIST_PANELS:
            shown = [
                shown[round(i * (len(shown) - 1) / (_MAX_HIST_PANELS - 1))] for i in range(_MAX_HIST_PANELS)
            ]
        cols = 4
        rows = math.ceil(len(shown) / cols)
        fig = new_figure(14, 4 + 2.2 * rows)
        grid = fig.add_gridspec(1 + rows, cols)
        index = list(range(len(names)))
        ax = fig.add_subplot(grid[0, :2])
        ax.errorbar(
            index, [stats[n][0] for n in names], yerr=[stats[n][1] for n in names], fmt="o", ms=3, capsize=2
        )
        ax.set(title=f"activation mean +- std per layer (step {self.last['step']})", xlabel="layer",
               ylabel="activation")
        ax = fig.add_subplot(grid[0, 2:])
        ax.plot(index, [stats[n][3] for n in names], "o-", ms=3, label="dead units")
        saturated = [stats[n][4] if kinds[n] in ("tanh", "sigmoid") else float("nan") for n in names]
        if any(math.isfinite(v) for v in saturated):
            ax.plot(index, saturated, "s-", ms=3, label="saturated")
        ax.set(title="dead / saturated fraction per layer", xlabel="layer", ylabel="fraction",
               ylim=(-0.05, 1.05))
        ax.legend(loc="upper right")
        for axis in fig.axes:
            axis.set_xticks(index, [str(i) for i in index], fontsize=6)
        for i, n in enumerate(shown):
            counts, edges = hists[n]
            ax = fig.add_subplot(grid[1 + i // cols, i % cols])
            ax.stairs(counts, edges, fill=True)
            ax.set_title(f"{names.index(n)}: {n}", fontsize=8)
            ax.tick_params(labelsize=6)
        path = save_figure(fig, path)
        return path

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last, "step": self._step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last = dict(state_dict.get("last", {}))
        self._step = int(state_dict.get("step", -1))
