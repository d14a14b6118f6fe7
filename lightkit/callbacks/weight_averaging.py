"""``RawSafeWeightAveraging``: Lightning's ``WeightAveraging`` with checkpoints that always resume from the raw weights.

Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (2.6) keeps an ``AveragedModel``,
swaps it in for validation and stores both weight sets in checkpoints. What it gets wrong, and what
this base class (of :class:`lightkit.callbacks.ema.EMA` and :class:`lightkit.callbacks.swa.SWA`) fixes:

* ``trainer.test(ckpt_path=...)`` / ``validate`` / ``predict`` with the callback still attached (the
  lightkit CLI's test-after-fit) loads ``current_model_state``, i.e. evaluates the **raw** weights
  although ``state_dict`` holds the averaged ones. Here the raw weights are restored only when fitting.
* After ``fit`` it *copies* the average into the module, so a checkpoint written then
  (``trainer.save_checkpoint``) stores the averaged weights as ``current_model_state``: a resume
  continues from the wrong weights. Here the weights are *swapped*, so the raw ones are always at
  hand, whenever a checkpoint is written (also while the average is swapped in for validation).
* ``trainer.validate()`` after ``fit`` swaps the raw weights back in. Here swapping only happens in
  fit's validation.
* It validates with the average from the very first validation (sanity check, or before SWA
  starts), when the average is still the initial weights; here the raw weights are validated until
  the average has received an update.
* Fitting twice with one instance never updates the second time (the step counter is not reset).
* It does not report the raw model; with ``validate_with="both"`` the raw weights are evaluated on the
  same validation batches (one extra forward per batch, no extra memory: the ``AveragedModel``
  holds the raw weights while the average is swapped in).

Checkpoint layout (keys of the checkpoint dict):

* ``state_dict``: the weights that were **validated** (the average, unless ``validate_with="raw"`` or
  no update happened yet), so a monitored ``ModelCheckpoint`` and ``load_from_checkpoint`` agree.
* ``current_model_state``: the raw training weights; a resumed fit continues from them.
* ``average_model_state``: the averaged weights, when ``state_dict`` holds the raw ones.
* ``averaging_state``: the ``AveragedModel``'s ``n_averaged``.
* ``weight_averaging``: a dict saying which is which (``state_dict``: ``"average"``/``"raw"``,
  ``raw_key``, ``average_key``, ``num_averaged``, ``saved_while_swapped``: the module held the
  average when the checkpoint was written, as after fit).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["RawSafeWeightAveraging", "ValidateWith"]

ValidateWith = Literal["ema", "raw", "both"]
_VALIDATE_WITH = ("ema", "raw", "both")


class RawSafeWeightAveraging(WeightAveraging):
    """Weight averaging whose checkpoints say which weights were validated and resume from the raw ones.

    Subclasses pass the averaging rule (a picklable ``multi_avg_fn`` for torch's ``AveragedModel``)
    and override ``should_update``. Parameters *and* buffers are averaged (BatchNorm statistics
    included), so the averaged model can be validated as it is.

    Args:
        multi_avg_fn: in-place averaging rule, called as ``fn(averaged, current, num_averaged)``.
        validate_with: which weights fit's validation uses: ``"ema"`` the average (``val/*`` keys),
            ``"raw"`` the training weights, ``"both"`` the average as ``val/*`` plus the raw weights as
            ``<prefix>/raw_val_loss`` and ``<prefix>/raw_val_acc``. (``"ema"`` names the average for
            every subclass.) Until the first update the raw weights are validated.
        device: where the averaged copy lives (``"cpu"`` saves accelerator memory); default the module's.

    Raises:
        ValueError: unknown ``validate_with``; in ``setup``: another ``WeightAveraging`` callback attached.
    """

    metric_prefix: ClassVar[str] = "averaging"

    def __init__(self, multi_avg_fn: Any, validate_with: ValidateWith = "both", device: str | None = None) -> None:
        name = type(self).__name__
        if validate_with not in _VALIDATE_WITH:
            raise ValueError(f"{name}: validate_with={validate_with!r} is not one of {_VALIDATE_WITH}; "
                             f"use 'both' to validate the average and also log the raw weights.")
        super().__init__(device=device, use_buffers=True, multi_avg_fn=multi_avg_fn)
        self.validate_with = validate_with
        # True while the module holds the averaged weights and the AveragedModel the raw ones.
        self._swapped = False
        self._swapped_for_validation = False
        self._raw_sums: torch.Tensor | None = None
        self._warned_raw = False

    # -- state -------------------------------------------------------------------------------
    @property
    def num_averaged(self) -> int:
        """Updates the average has received (0 before the first one or outside fit)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    @property
    def average_holds_update(self) -> bool:
        return self.num_averaged > 0

    def averaged_state_dict(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like ``pl_module.state_dict()``, wherever they are now."""
        return self._weights(pl_module, average=True)

    def raw_state_dict(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        """The raw training weights, keyed like ``pl_module.state_dict()``, wherever they are now."""
        return self._weights(pl_module, average=False)

    def _weights(self, pl_module: LightningModule, average: bool) -> dict[str, torch.Tensor]:
        if self._average_model is None:
            raise ValueError(f"{type(self).__name__}: there are no averaged weights before fit; "
                             "call trainer.fit first.")
        if average != self._swapped:  # the AveragedModel holds what is asked for
            return dict(self._average_model.module.state_dict())
        return dict(pl_module.state_dict())

    def _swap(self, pl_module: LightningModule) -> None:
        self._swap_models(pl_module)
        self._swapped = not self._swapped

    # -- fit ---------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        others = [type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, WeightAveraging) and cb is not self]
        if others:
            raise ValueError(f"{type(self).__name__}: another weight-averaging callback {others} is attached; both "
                             f"would swap weights into the module. Keep one (EMA or SWA).")
        if stage == "fit":
            # A new fit starts a new average from the module's weights as they are (after an earlier
            # fit: the averaged ones); a resume then restores both sets in on_load_checkpoint.
            self._latest_update_step = 0
            self._latest_update_epoch = -1
            self._swapped = self._swapped_for_validation = False
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self._average_model is not None:
            self._average_model.module.eval()  # never trained; eval so that raw-metric forwards keep BN fixed

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is None:
            return
        if not self.average_holds_update:
            rank_zero_warn(f"{type(self).__name__}: training ended before the first averaging update; the module "
                           f"keeps the raw weights. Start averaging earlier or train longer.")
            return
        if not self._swapped:
            self._swap(pl_module)  # swap, not copy: the raw weights stay available for checkpoints
        self.on_average_swapped_in(trainer, pl_module)
        rank_zero_info(f"{type(self).__name__}: the module now holds the averaged weights "
                       f"({self.num_averaged} updates).")

    def on_average_swapped_in(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hook after fit has swapped the averaged weights into the module (SWA recomputes BatchNorm here)."""

    # -- validation --------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if not fitting or self.validate_with == "raw" or self._swapped or not self.average_holds_update:
            return
        self._swap(pl_module)
        self._swapped_for_validation = True
        if self.validate_with == "both":
            self._raw_sums = torch.zeros(3, dtype=torch.float64, device=pl_module.device)

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._raw_sums is None or self._average_model is None:
            return
        target = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if target is None or not isinstance(target, torch.Tensor) or target.ndim != 1 or target.is_floating_point():
            if not self._warned_raw:
                rank_zero_warn(f"{type(self).__name__}: validation batches are not (images, class indices); the raw "
                               f"weights are not evaluated. Use validate_with='ema' to silence this.")
                self._warned_raw = True
            self._raw_sums = None
            return
        raw_model = self._average_model.module  # holds the raw weights while the average is swapped in
        device = next(raw_model.parameters()).device
        logits = raw_model(batch[0].to(device)).to(target.device)
        loss_fn = getattr(pl_module, "loss", None)
        loss = loss_fn(logits, target) if callable(loss_fn) else F.cross_entropy(logits, target)
        n = target.shape[0]
        correct = (logits.argmax(dim=1) == target).sum()
        self._raw_sums += torch.stack([loss.double() * n, correct.double(), loss.new_tensor(n, dtype=torch.float64)])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._raw_sums is not None:
            sums = trainer.strategy.reduce(self._raw_sums, reduce_op="sum")
            if float(sums[2]) > 0:
                pl_module.log(f"{self.metric_prefix}/raw_val_loss", float(sums[0] / sums[2]))
                pl_module.log(f"{self.metric_prefix}/raw_val_acc", float(sums[1] / sums[2]))
            self._raw_sums = None
        if self._swapped_for_validation:
            self._swap(pl_module)
            self._swapped_for_validation = False

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step, "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = int(state_dict["latest_update_step"])
        self._latest_update_epoch = int(state_dict.get("latest_update_epoch", -1))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            return  # no fit yet: the module's weights are all there is
        avg_state = self._average_model.state_dict()
        other = {k[len("module."):]: v for k, v in avg_state.items() if k.startswith("module.")}
        module_state = checkpoint["state_dict"]
        raw, average = (other, module_state) if self._swapped else (module_state, other)
        validated_average = self.average_holds_update and self.validate_with != "raw"
        checkpoint["state_dict"] = average if validated_average else raw
        checkpoint["current_model_state"] = raw
        if not validated_average:
            checkpoint["average_model_state"] = average
        checkpoint["averaging_state"] = {k: v for k, v in avg_state.items() if not k.startswith("module.")}
        checkpoint["weight_averaging"] = {
            "callback": type(self).__name__,
            "state_dict": "average" if validated_average else "raw",
            "validate_with": self.validate_with,
            "raw_key": "current_model_state",
            "average_key": "state_dict" if validated_average else "average_model_state",
            "num_averaged": self.num_averaged,
            "saved_while_swapped": self._swapped,
        }

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING or self._average_model is None:
            return  # test / validate / predict evaluate state_dict: the validated weights
        if "current_model_state" not in checkpoint:
            rank_zero_warn(f"{type(self).__name__}: the checkpoint holds no averaged weights; the average starts "
                           f"afresh from its state_dict.")
            return
        meta = checkpoint.get("weight_averaging", {})
        average = checkpoint[meta.get("average_key", "state_dict")]  # Lightning's layout: state_dict
        avg_state = {f"module.{k}": v for k, v in average.items()}
        avg_state.update(checkpoint.get("averaging_state", {}))
        self._average_model.load_state_dict(avg_state)
        pl_module.load_state_dict(checkpoint["current_model_state"])
        self._swapped = False
