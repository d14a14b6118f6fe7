"""``EMA``: exponential moving average of the weights, validated, checkpointed both ways, resumed from the raw ones."""

from __future__ import annotations

from lightkit.callbacks.weight_averaging import RawSafeWeightAveraging, ValidateWith
from lightkit.functional.averaging import EMAAverager, ema_decay

__all__ = ["EMA"]


class EMA(RawSafeWeightAveraging):
    """Exponential moving average of parameters and buffers (Polyak & Juditsky 1992; TF/timm ``ModelEma``).

    After every ``every_n_steps``-th optimizer step from ``start_step`` on, the average moves towards the
    current weights: ``avg <- d_t * avg + (1 - d_t) * w`` with ``d_t = min(decay, (1 + t) / (10 + t))``
    (``t`` = updates so far, warm-up from TensorFlow's ``ExponentialMovingAverage(num_updates=t)``;
    see :func:`lightkit.functional.averaging.ema_decay`) or ``d_t = decay`` without warm-up. The first
    update copies the weights (torch ``AveragedModel``). BatchNorm statistics are averaged the same way.

    Built on Lightning's ``WeightAveraging`` through
    :class:`~lightkit.callbacks.weight_averaging.RawSafeWeightAveraging`, which fixes its checkpoint handling
    (tests with a checkpoint evaluate the averaged weights; a resume always continues from the raw weights;
    see that module for the checkpoint layout).

    After ``fit`` the module holds the averaged weights (a later ``fit`` starts a new average from them,
    unless it resumes from a checkpoint). Checkpoints written during fit hold both weight sets:
    ``state_dict`` the validated ones, ``current_model_state`` the raw ones.

    Args:
        decay: target decay per update, in [0, 1); the average spans ~``1 / (1 - decay)`` updates.
        warmup: ramp the decay up with ``(1 + t) / (10 + t)``; keep on for short runs.
        every_n_steps: update after every n-th optimizer step (>= 1); the decay applies per update.
        start_step: first optimizer step (0-based) that updates the average, >= 0.
        validate_with: ``"ema"``: fit's validation (``val/*``) uses the average; ``"raw"``: the training
            weights; ``"both"``: the average as ``val/*`` and the raw weights as ``ema/raw_val_loss`` /
            ``ema/raw_val_acc``. Until the first update the raw weights are validated.
        device: where the averaged copy lives (``"cpu"`` saves accelerator memory); default the module's.

    Raises:
        ValueError: ``decay`` outside [0, 1), ``every_n_steps`` < 1, negative ``start_step``, unknown ``validate_with``.

    Logged keys (``validate_with="both"``): ``ema/raw_val_loss``, ``ema/raw_val_acc``.
    """

    metric_prefix = "ema"

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        every_n_steps: int = 1,
        start_step: int = 0,
        validate_with: ValidateWith = "both",
        device: str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay={decay} must be in [0, 1); 0.999 averages over ~1000 updates.")
        if every_n_steps < 1:
            raise ValueError(f"EMA: every_n_steps={every_n_steps} must be >= 1 (1: update after every optimizer step).")
        if start_step < 0:
            raise ValueError(f"EMA: start_step={start_step} must be >= 0 (0: average from the first step).")
        super().__init__(EMAAverager(decay, warmup), validate_with=validate_with, device=device)
        self.decay = decay
        self.warmup = warmup
        self.every_n_steps = every_n_steps
        self.start_step = start_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Update after optimizer step ``step_idx`` (0-based) when it is ``start_step + k * every_n_steps``."""
        if step_idx is None or step_idx < self.start_step:
            return False
        return (step_idx - self.start_step) % self.every_n_steps == 0

    def current_decay(self) -> float:
        """The decay the next update will use (0 for the first: it copies the weights)."""
        n = self.num_averaged
        return 0.0 if n == 0 else ema_decay(n, self.decay, self.warmup)
