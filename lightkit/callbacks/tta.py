"""``TTA``: test-time augmentation at test and predict: the mean softmax over deterministic views."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lightkit.functional.tta import tta_probs, tta_view_names

__all__ = ["TTA"]


class TTA(Callback):
    """Test-time augmentation: average the softmax over deterministic views of each input.

    The views are the identity, the horizontal mirror (where the data module declares
    ``flips_preserve_label``), four shifts by ``shifts`` pixels and a centre crop resized back (see
    :func:`lightkit.functional.tta.tta_views`). At **test** the module's own metrics stay those of the
    plain input and the TTA figures are logged beside them; at **predict** the ``"probs"`` of each
    ``predict_step`` output dict (``ImageClassifier``'s) are replaced in place by the TTA average, so
    :class:`~lightkit.callbacks.prediction_writer.PredictionWriter` (which writes at epoch end) writes
    them. Place ``TTA`` before any writer that writes per batch.

    Args:
        flips: add the mirrored view. ``None`` (default): when the data module declares
            ``flips_preserve_label = True``; no mirror without a data module.
        shifts: pixels of the four shifted views; 0: none.
        crop: fraction of each side kept by the centre-crop view, in (0, 1); ``None``: no crop view.

    Raises:
        ValueError: ``shifts`` < 0 or ``crop`` outside (0, 1); in ``setup`` (or at test / predict start for a data
            module with ``flips: auto`` outside a fit): ``flips=True`` with a data
            module whose ``flips_preserve_label`` is ``False`` (a mirrored digit is another digit).

    Logged keys (test): ``tta/test_acc``, ``tta/test_nll`` (mean negative log-likelihood, nats), ``tta/views``.
    """

    def __init__(self, flips: bool | None = None, shifts: int = 0, crop: float | None = None) -> None:
        tta_view_names(False, shifts, crop)  # validates shifts and crop
        self.flips = flips
        self.shifts = shifts
        self.crop = crop
        self._flips = bool(flips)
        self._sums: torch.Tensor | None = None
        self._warned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Fail fast on flips=True with data whose mirrored images change label, before a fit trains; a data
        # module's flips: auto is checked here only at fit (decided in its setup), else after the restore.
        dm = trainer.datamodule
        if self.flips is True and dm is not None and (stage == "fit" or getattr(dm, "flips", None) != "auto"):
            self._resolve(trainer, warn=False)

    def _resolve(self, trainer: Trainer, warn: bool = True) -> None:
        """Resolve ``flips`` from the data module. Called at test / predict start, after a checkpoint was
        restored, so a data module's ``flips: auto`` reuses the decision its fit made."""
        declared = getattr(trainer.datamodule, "flips_preserve_label", None) if trainer.datamodule is not None else None
        if self.flips is True and declared is False:
            raise ValueError(f"TTA: flips=True but {type(trainer.datamodule).__name__}.flips_preserve_label is False "
                             f"(a mirrored image changes its label); set flips: null or false.")
        self._flips = bool(declared) if self.flips is None else self.flips
        if warn and len(self.view_names()) == 1:
            rank_zero_warn("TTA: only the identity view is configured (no flips, shifts or crop); TTA changes nothing.")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._resolve(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._resolve(trainer)

    def view_names(self) -> list[str]:
        """The views in use (flips resolved at test / predict start)."""
        return tta_view_names(self._flips, self.shifts, self.crop)

    def probs(self, pl_module: LightningModule, x: torch.Tensor) -> torch.Tensor:
        """TTA probabilities ``(N, C)`` of the module on the input batch ``x``."""
        return tta_probs(pl_module, x, flips=self._flips, shifts=self.shifts, crop=self.crop)

    # -- test --------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64, device=pl_module.device)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._sums is None or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return
        x, target = batch[0], batch[1]
        probs = self.probs(pl_module, x)
        true_p = probs.gather(1, target.long().view(-1, 1)).squeeze(1).clamp_min(torch.finfo(torch.float32).tiny)
        self._sums += torch.stack([(probs.argmax(1) == target).sum().double(), -true_p.log().sum().double(),
                                   torch.tensor(float(len(target)), dtype=torch.float64, device=probs.device)])

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._sums is None:
            return
        sums = trainer.strategy.reduce(self._sums, reduce_op="sum")
        self._sums = None
        if float(sums[2]) > 0:
            pl_module.log("tta/test_acc", float(sums[0] / sums[2]))
            pl_module.log("tta/test_nll", float(sums[1] / sums[2]))
            pl_module.log("tta/views", float(len(self.view_names())))

    # -- predict -----------------------------------------------------------------------------
    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            if not self._warned:
                rank_zero_warn("TTA: predict_step does not return a dict with 'probs'; "
                               "predictions are left as they are.")
                self._warned = True
            return
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs["probs"] = self.probs(pl_module, x)
