"""``LossCurves``: training vs validation loss, accuracy and learning rate as a PNG in the run folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lightkit.callbacks._monitor import log_image, monitor_dir, new_figure, paused, save_figure, step_loss
from lightkit.functional.stats import to_host

__all__ = ["LossCurves"]



def _float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _ema(values: list[float], alpha: float) -> list[float]:
    out, avg = [], None
    for v in values:
        if math.isfinite(v):
            avg = v if avg is None else alpha * avg + (1 - alpha) * v
        out.append(avg if avg is not None else float("nan"))
    return out


class LossCurves(Callback):
    """Loss curves, the second check of CS231n's babysitting (https://cs231n.github.io/neural-networks-3/#loss).

    Records the training loss of every step (from what ``training_step`` returns, so any module
    works), the learning rate of every parameter group of the first optimizer, and at each validation
    the metrics ``val_loss`` / ``val_acc`` (and ``train_acc`` at each training epoch end) from
    ``trainer.callback_metrics``. Step losses stay on the device and are read back in batches of
    ``sync_every_n_steps`` (one host sync per batch). Rank zero only; nothing is recorded during the
    sanity check or while ``lightkit_pause_monitor`` is True.

    At the end of ``fit`` the curves are drawn to ``<dirpath>/curves.png`` (and logged as the W&B
    image ``monitor/curves``); :meth:`save` draws them on demand. Loss: raw and smoothed training
    loss vs step with the validation loss at its steps (a widening gap is overfitting); accuracy;
    LR (log scale) per parameter group; epoch boundaries as dotted lines. Logs no scalars of its own.

    Args:
        val_loss: key of the validation loss in ``callback_metrics``.
        val_acc: key of the validation accuracy ("" to skip).
        train_acc: key of the epoch training accuracy ("" to skip).
        sync_every_n_steps: how many step losses are gathered per host read (>= 1).
        smoothing: EMA factor of the smoothed training curve, in [0, 1) (0: no smoothing).
        dirpath: folder for the PNG; default ``<trainer.log_dir or default_root_dir>/monitor``.

    Raises:
        ValueError: ``sync_every_n_steps`` < 1 or ``smoothing`` outside [0, 1).
    """

    def __init__(
        self,
        val_loss: str = "val/loss",
        val_acc: str = "val/acc",
        train_acc: str = "train/acc",
        sync_every_n_steps: int = 50,
        smoothing: float = 0.9,
        dirpath: str | None = None,
    ) -> None:
        if sync_every_n_steps < 1:
            raise ValueError(f"LossCurves: sync_every_n_steps={sync_every_n_steps} must be >= 1 (steps per host read).")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"LossCurves: smoothing={smoothing} must be in [0, 1); 0.9 is a good default, "
                             "0 disables it.")
        self.val_loss = val_loss
        self.val_acc = val_acc
        self.train_acc = train_acc
        self.sync_every_n_steps = sync_every_n_steps
        self.smoothing = smoothing
        self.dirpath = dirpath
        self._reset()
        self._dir = Path(dirpath) if dirpath else Path("monitor")

    def _reset(self) -> None:
        self.train: dict[str, list[float]] = {"step": [], "loss": []}
        self.lr: dict[str, list[float]] = {}
        self.lr_steps: list[int] = []
        self.val: dict[str, list[float]] = {"step": [], "epoch": [], "loss": [], "acc": []}
        self.train_epochs: dict[str, list[float]] = {"step": [], "epoch": [], "acc": []}
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._warned_missing = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._reset()  # a new fit starts afresh; load_state_dict (after setup) restores a resumed one
            self._dir = monitor_dir(trainer, self.dirpath)

    def _active(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking and not paused(trainer, pl_module)

    # -- recording ---------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active(trainer, pl_module):
            return
        step = trainer.global_step
        loss = step_loss(outputs)
        if loss is not None:
            self._pending.append((step, loss.detach().reshape(())))
        if trainer.optimizers and (not self.lr_steps or self.lr_steps[-1] != step):
            self.lr_steps.append(step)
            for i, group in enumerate(trainer.optimizers[0].param_groups):
                name = str(group.get("name", f"group{i}"))
                self.lr.setdefault(name, []).append(_float(group["lr"]) or 0.0)
        if len(self._pending) >= self.sync_every_n_steps:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        values = to_host([torch.stack([t for _, t in self._pending])])[0]
        self._pending = []
        self.train["step"].extend(float(s) for s in steps)
        self.train["loss"].extend(values)

    def _metric(self, trainer: Trainer, key: str) -> float:
        value = _float(trainer.callback_metrics.get(key)) if key else None
        return float("nan") if value is None else value

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer, pl_module) or trainer.state.fn != "fit":
            return
        self.val["step"].append(float(trainer.global_step))
        self.val["epoch"].append(float(trainer.current_epoch))
        self.val["loss"].append(self._metric(trainer, self.val_loss))
        self.val["acc"].append(self._metric(trainer, self.val_acc))
        self._warn_missing(trainer, [self.val_loss, self.val_acc])

    def _warn_missing(self, trainer: Trainer, keys: list[str]) -> None:
        """Once per fit: a configured key the module never logs draws an empty curve; say which keys exist."""
        if self._warned_missing:
            return
        missing = [k for k in keys if k and k not in trainer.callback_metrics]
        if missing:
            self._warned_missing = True
            logged = sorted(k for k in trainer.callback_metrics if not k.startswith("lr-"))
            rank_zero_warn(
                f"LossCurves: {', '.join(repr(k) for k in missing)} never logged by "
                f"{type(trainer.lightning_module).__name__}, "
                f"so its curve stays empty; the logged keys are {logged}: set LossCurves(val_loss=..., val_acc=...) "
                f"to yours (an empty string skips a curve)."
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer, pl_module):
            return
        self._flush()
        self.train_epochs["step"].append(float(trainer.global_step))
        self.train_epochs["epoch"].append(float(trainer.current_epoch))
        self.train_epochs["acc"].append(self._metric(trainer, self.train_acc))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._flush()
        if self.train["step"] or self.val["step"]:
            path = self.save(self._dir / "curves.png")
            log_image(trainer, "monitor/curves", path, trainer.global_step)

    # -- drawing -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Draw loss, accuracy and LR curves recorded so far to a PNG at ``path`` and return the path."""
        self._flush()
        fig = new_figure(10, 10, hspace=0.3)
        ax_loss, ax_acc, ax_lr = fig.subplots(3, 1, sharex=True)
        steps, losses = self.train["step"], self.train["loss"]
        if steps:
            ax_loss.plot(steps, losses, color="C0", alpha=0.3, lw=0.8, label="train (step)")
            if self.smoothing:
                ax_loss.plot(steps, _ema(losses, self.smoothing), color="C0", lw=1.5,
                             label=f"train (EMA {self.smoothing})")
        if self.val["step"]:
            ax_loss.plot(self.val["step"], self.val["loss"], "o-", color="C1", label=f"validation ({self.val_loss})")
        ax_loss.set(title="loss", ylabel="loss")
        if (any(v > 0 for v in losses if math.isfinite(v))
                and max((v for v in losses if math.isfinite(v)), default=1)
                > 20 * min((v for v in losses if math.isfinite(v) and v > 0), default=1)):
            ax_loss.set_yscale("log")
        if any(math.isfinite(v) for v in self.val["acc"]):
            ax_acc.plot(self.val["step"], self.val["acc"], "o-", color="C1", label=f"validation ({self.val_acc})")
        if any(math.isfinite(v) for v in self.train_epochs["acc"]):
            ax_acc.plot(self.train_epochs["step"], self.train_epochs["acc"], "s--", color="C0",
                        label=f"train ({self.train_acc})")
        ax_acc.set(title="accuracy", ylabel="accuracy")
        curves: dict[tuple[float, ...], list[str]] = {}  # groups with identical schedules share one curve
        for name, values in self.lr.items():
            curves.setdefault(tuple(values), []).append(name)
        for values, names in list(curves.items())[:12]:
            label = names[0] + (f" (+{len(names) - 1} groups alike)" if len(names) > 1 else "")
            ax_lr.plot(self.lr_steps, list(values), lw=1, label=label)
        if any(v > 0 for values in curves for v in values):
            ax_lr.set_yscale("log")
        ax_lr.set(title="learning rate", xlabel="optimizer step", ylabel="lr")
        for ax in (ax_loss, ax_acc, ax_lr):
            for boundary in self.train_epochs["step"]:
                ax.axvline(boundary, color="0.6", ls=":", lw=0.8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
        return save_figure(fig, path)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"train": self.train, "lr": self.lr, "lr_steps": self.lr_steps, "val": self.val,
                "train_epochs": self.train_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = {k: list(v) for k, v in state_dict["train"].items()}
        self.lr = {k: list(v) for k, v in state_dict["lr"].items()}
        self.lr_steps = list(state_dict["lr_steps"])
        self.val = {k: list(v) for k, v in state_dict["val"].items()}
        self.train_epochs = {k: list(v) for k, v in state_dict["train_epochs"].items()}
