"""``MixUpCutMix``: MixUp / CutMix / label smoothing on training batches, as a callback."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.functional.mixing import cutmix_batch, mixup_batch, one_hot_smooth, sample_lam

__all__ = ["PAUSE_FLAG", "MixUpCutMix"]

PAUSE_FLAG = "lightkit_pause_augment"
"""Attribute that, when True on the LightningModule or the Trainer, pauses batch augmentation."""


class MixUpCutMix(Callback):
    """MixUp (https://arxiv.org/abs/1710.09412) and CutMix (https://arxiv.org/abs/1905.04899) with soft targets.

    In ``on_train_batch_start`` the training batch ``[x, y]`` is replaced in place by a mixed one:
    ``batch[0]`` the mixed images, ``batch[1]`` soft targets (N, C) float, which
    ``ImageClassifier`` feeds to cross-entropy; its training accuracy is then measured against the
    dominant label ``argmax(y_soft)`` (an honest but approximate figure: validation is never mixed).
    Validation, test, prediction and sanity checks never see mixing; it is paused while the module
    or trainer has ``lightkit_pause_augment = True`` (the LR range test sets it) and switched off for
    the last ``off_last_epochs`` epochs, so the model finishes on clean data (as in timm).

    **In your own LightningModule**, ``batch[1]`` is (N, C) float inside ``training_step`` while the
    callback is active (and (N,) integer labels otherwise): compute the loss with
    ``F.cross_entropy(logits, y)`` (it accepts both) and accuracy against
    :meth:`MixUpCutMix.hard_labels` ``(y)``, the dominant label; or set ``append_hard_labels: true``
    and read them from ``batch[-1]`` ((N,) long, appended to every training batch while active).

    Randomness comes from a private generator reseeded per batch from ``(seed, global_rank, batch
    counter)``: DDP ranks draw different mixes, and a resumed run continues exactly (the counter is
    in ``state_dict``), independently of the global RNG.

    Args:
        mixup_alpha: MixUp Beta(alpha, alpha) concentration; 0 disables MixUp. 0.2 is the paper's ImageNet value.
        cutmix_alpha: CutMix Beta(alpha, alpha) concentration; 0 disables CutMix. The paper uses 1.0.
        prob: probability that a batch is mixed at all (per batch).
        switch_prob: when both are enabled, probability of CutMix rather than MixUp (per batch).
        off_last_epochs: number of final epochs without mixing (needs ``Trainer(max_epochs=...)``).
        label_smoothing: smoothing of the targets before mixing, applied to every augmented batch,
            mixed or not (leave ``ImageClassifier.label_smoothing`` at 0 then, or it is applied twice).
        num_classes: number of classes; default ``pl_module.hparams.num_classes``.
        seed: base seed of the mixing generator.
        append_hard_labels: append the dominant label of each sample, (N,) long, to the training batch.

    Raises:
        ValueError: negative alphas or both zero, probabilities outside [0, 1], negative
            ``off_last_epochs``, ``label_smoothing`` outside [0, 1); in ``setup``: no ``num_classes``
            found, or ``off_last_epochs`` without ``max_epochs``.

    Logged keys: ``mixing/lam`` (epoch mean of the weight of the original sample; 1.0 for a batch
    left unmixed).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        off_last_epochs: int = 0,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        seed: int = 0,
        append_hard_labels: bool = False,
    ) -> None:
        self.append_hard_labels = append_hard_labels
        if mixup_alpha < 0 or cutmix_alpha < 0 or (mixup_alpha == 0 and cutmix_alpha == 0):
            raise ValueError(
                f"MixUpCutMix: mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}; set at least one > 0 "
                f"(e.g. mixup_alpha=0.2 or cutmix_alpha=1.0), or drop the callback."
            )
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MixUpCutMix: {name}={value} must be a probability in [0, 1].")
        if off_last_epochs < 0:
            raise ValueError(f"MixUpCutMix: off_last_epochs={off_last_epochs} must be >= 0 (epochs).")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"MixUpCutMix: label_smoothing={label_smoothing} must be in [0, 1); 0.1 is common.")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"MixUpCutMix: num_classes={num_classes} must be >= 2, or None to read the module's.")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.off_last_epochs = off_last_epochs
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.seed = seed
        self.batches_seen = 0
        self._num_classes: int | None = num_classes
        self._generator = torch.Generator()

    # -- setup -------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        hparams = getattr(pl_module, "hparams", {})
        self._num_classes = self.num_classes if self.num_classes is not None else hparams.get("num_classes")
        if self._num_classes is None:
            raise ValueError(
                f"MixUpCutMix: no num_classes on {type(pl_module).__name__}.hparams; pass MixUpCutMix(num_classes=...)."
            )
        if self.off_last_epochs and trainer.max_epochs in (None, -1):
            raise ValueError(
                f"MixUpCutMix: off_last_epochs={self.off_last_epochs} needs Trainer(max_epochs=...); "
                f"set max_epochs or off_last_epochs=0."
            )
        if self.label_smoothing and hparams.get("label_smoothing"):
            rank_zero_warn(
                f"MixUpCutMix: label_smoothing={self.label_smoothing} and the module's "
                f"label_smoothing={hparams.get('label_smoothing')} both apply; set one of them to 0."
            )
        kinds = [k for k, a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a > 0]
        rank_zero_info(
            f"MixUpCutMix: {'+'.join(kinds)} on {self.prob:.0%} of training batches"
            + (f", label smoothing {self.label_smoothing}" if self.label_smoothing else "")
            + (f", off for the last {self.off_last_epochs} epochs" if self.off_last_epochs else "")
        )

    # -- the hook ----------------------------------------------------------------------------
    def active(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        """Whether this training batch is augmented (training, not paused, not in the final epochs)."""
        if not trainer.training or trainer.sanity_checking:
            return False
        if getattr(pl_module, PAUSE_FLAG, False) or getattr(trainer, PAUSE_FLAG, False):
            return False
        if self.off_last_epochs and trainer.max_epochs not in (None, -1):
            return trainer.current_epoch < trainer.max_epochs - self.off_last_epochs
        return True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.active(trainer, pl_module):
            return
        if not isinstance(batch, list) or len(batch) < 2:
            raise TypeError(
                f"MixUpCutMix: training batch is a {type(batch).__name__}; it needs a list [x, y, ...] "
                f"(the default collate of a dataset returning (x, y) gives one) so it can be replaced in place."
            )
        self._generator.manual_seed(self._stream_seed(trainer.global_rank))
        self.batches_seen += 1
        x, y = batch[0], batch[1]
        x_new, y_new, lam, _ = self.mix(x, y)
        batch[0], batch[1] = x_new, y_new
        if self.append_hard_labels:
            batch.append(self.hard_labels(y_new))
        pl_module.log("mixing/lam", lam, on_step=False, on_epoch=True, batch_size=1)

    @staticmethod
    def hard_labels(y: torch.Tensor) -> torch.Tensor:
        """The dominant label of (N, C) soft targets (``argmax``), or ``y`` itself when it already holds labels."""
        return y.argmax(dim=1) if y.ndim == 2 else y

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
        """Mix one batch with the callback's generator: ``(x, soft targets, lam, index or None)``."""
        g, num_classes = self._generator, int(self._num_classes or 0)
        use_mix = float(torch.rand((), generator=g)) < self.prob
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0
                                                or float(torch.rand((), generator=g)) < self.switch_prob)
        if not use_mix:
            return x, one_hot_smooth(y, num_classes, self.label_smoothing).to(x.dtype), 1.0, None
        if use_cutmix:
            lam = sample_lam(self.cutmix_alpha, g)
            return cutmix_batch(x, y, num_classes, lam=lam, generator=g, smoothing=self.label_smoothing)
        lam = sample_lam(self.mixup_alpha, g)
        return mixup_batch(x, y, num_classes, lam=lam, generator=g, smoothing=self.label_smoothing)

    def _stream_seed(self, rank: int) -> int:
        state = np.random.SeedSequence([self.seed, rank, self.batches_seen]).generate_state(1, np.uint64)[0]
        return int(state) & (2**63 - 1)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "batches_seen": self.batches_seen, "generator": self._generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = int(state_dict["seed"])
        self.batches_seen = int(state_dict["batches_seen"])
        if "generator" in state_dict:
            self._generator.set_state(state_dict["generator"])
