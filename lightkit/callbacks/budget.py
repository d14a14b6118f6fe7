"""``TrainingBudget``: a floor of optimizer steps, a warning when a fit is too short, end-of-fit verdicts.

The CLI adds one to every ``fit`` (warnings only); a recipe sets ``min_steps`` so an epoch budget
scales up on small data. Maths in :mod:`lightkit.functional.budget`.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.functional.budget import epochs_for_steps, predicts_one_class, steps_per_epoch, still_improving

__all__ = ["TrainingBudget"]


def _train_samples(trainer: Trainer) -> tuple[int, int] | None:
    """``(train samples, batch size)`` of the fit's train loader, where it has a length."""
    datamodule = trainer.datamodule
    loader: Any = None
    if datamodule is not None and hasattr(datamodule, "train_dataloader"):
        loader = datamodule.train_dataloader()
    elif trainer.lightning_module is not None and hasattr(trainer.lightning_module, "train_dataloader"):
        try:
            loader = trainer.lightning_module.train_dataloader()
        except Exception:  # a module without its own loader: nothing to count  # noqa: BLE001
            return None
    dataset = getattr(loader, "dataset", None)
    batch_size = getattr(loader, "batch_size", None)
    try:
        return (len(dataset), int(batch_size)) if dataset is not None and batch_size else None
    except TypeError:  # an iterable dataset without length
        return None


class TrainingBudget(Callback):
    """Count the optimizer steps a fit will take before it starts; raise an epoch budget to a floor.

    In ``setup`` the steps per epoch are counted from the train loader (samples, batch size, devices,
    accumulation, ``limit_train_batches``). With ``min_steps`` and no ``max_steps``, ``max_epochs`` is
    raised to reach it (one info line says so): a budget of "N epochs but at least S steps". Below
    ``warn_below`` planned steps, a warning gives the figure and the override. During the fit the
    validation loss and the module's prediction counts (``prediction_counts``, where it has them) are
    recorded; :meth:`verdicts` says "train longer" when validation was still improving at the end,
    and when the model predicts one class.

    Args:
        min_steps: fewest optimizer steps; ``None`` keeps the trainer's budget as configured.
        warn_below: warn when the fit will take fewer optimizer steps than this.
        monitor: validation metric recorded per epoch (``val/loss``).
        mode: ``min`` or ``max`` for ``monitor``.
        max_validations: when ``min_steps`` raises the epochs, validate every k-th epoch so that the
            fit validates about this many times (200 epochs of 2 steps need not validate 200 times);
            the epochs are rounded up to a multiple of k so the last epoch validates.

    Raises:
        ValueError: ``min_steps`` or ``warn_below`` negative, ``max_validations`` < 1, ``mode`` unknown.
    """

    def __init__(self, min_steps: int | None = None, warn_below: int = 100, monitor: str = "val/loss",
                 mode: str = "min", max_validations: int = 30) -> None:
        if max_validations < 1:
            raise ValueError(f"TrainingBudget: max_validations={max_validations} must be >= 1.")
        if min_steps is not None and min_steps < 0:
            raise ValueError(f"TrainingBudget: min_steps={min_steps} must be >= 0, or null for no floor.")
        if warn_below < 0:
            raise ValueError(f"TrainingBudget: warn_below={warn_below} must be >= 0 (0 never warns).")
        if mode not in ("min", "max"):
            raise ValueError(f"TrainingBudget: mode={mode!r}; use 'min' (a loss) or 'max' (an accuracy).")
        self.min_steps = min_steps
        self.warn_below = warn_below
        self.monitor = monitor
        self.mode = mode
        self.max_validations = max_validations
        self.planned_steps: int | None = None
        self.history: list[float] = []
        self.val_counts: list[int] = []
        self._stage: str | None = None

    # -- before the fit --------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stage = str(stage)
        if stage != "fit":
            return
        sized = _train_samples(trainer)
        if sized is None:
            return
        samples, batch_size = sized
        per_epoch = steps_per_epoch(samples, batch_size, trainer.world_size, trainer.accumulate_grad_batches,
                                    trainer.limit_train_batches)
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else math.inf
        planned = min(trainer.max_steps if trainer.max_steps >= 0 else math.inf, max_epochs * per_epoch)
        if (self.min_steps and trainer.max_steps < 0 and per_epoch > 0 and math.isfinite(max_epochs)
                and planned < self.min_steps):
            epochs = epochs_for_steps(self.min_steps, per_epoch)
            every = max(1, math.ceil(epochs / self.max_validations), trainer.check_val_every_n_epoch or 1)
            epochs = math.ceil(epochs / every) * every
            rank_zero_info(f"TrainingBudget: {samples} train images make {per_epoch} optimizer steps per epoch; "
                           f"max_epochs {trainer.max_epochs} -> {epochs} to reach min_steps={self.min_steps}"
                           + (f", validating every {every} epochs." if every > 1 else "."))
            trainer.fit_loop.max_epochs = epochs
            # Public trainer setting, read by the epoch loop at each epoch end.
            trainer.check_val_every_n_epoch = every
            planned = epochs * per_epoch
        self.planned_steps = int(planned) if math.isfinite(planned) else None
        if self.planned_steps is not None and self.planned_steps < self.warn_below:
            rank_zero_warn(
                f"TrainingBudget: this fit will take only {self.planned_steps} optimizer steps ({per_epoch} per "
                f"epoch: {samples} train images, batch {batch_size}); far too few to train a network. Raise it "
                f"with --trainer.max_epochs N or --trainer.max_steps N, or use configs/folder.yaml (a step budget)."
            )

    # -- during the fit ---------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.history.append(float(value))
        counts = getattr(pl_module, "prediction_counts", None)
        if callable(counts):
            self.val_counts = list(counts("val"))

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "val_counts": list(self.val_counts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Testing (validating, predicting) from a checkpoint restores callback state too: that must not
        # replace the fit's own history (the best checkpoint of epoch 23 of 80 would read as "still improving").
        if self._stage not in (None, "fit"):
            return
        self.history = list(state_dict.get("history", []))
        self.val_counts = list(state_dict.get("val_counts", []))

    # -- after the fit -----------------------------------------------------------------------
    def verdicts(self, test_counts: list[int] | None = None) -> list[str]:
        """End-of-fit remarks, one line each: still improving, one class predicted."""
        out = []
        if still_improving(self.history, self.mode):
            out.append(f"{self.monitor} was still improving at the end ({self.history[-2]:.4g} -> "
                       f"{self.history[-1]:.4g}): train longer (--trainer.max_epochs / max_steps).")
        for split, counts in (("test", test_counts), ("val", self.val_counts)):
            if counts:
                top = predicts_one_class(counts)
                if top is not None:
                    out.append(f"the model predicts class {top} for {counts[top]} of {sum(counts)} {split} images: "
                               f"it learned nothing (budget too short, LR too high or too low, or labels "
                               f"unbalanced); see `python cli.py sanity` and `lr_find`.")
                break
        return out
