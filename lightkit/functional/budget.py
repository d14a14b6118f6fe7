"""Training budgets in optimizer steps: steps per epoch, a floor of steps, and end-of-fit verdicts.

A budget in epochs means nothing across data sets: 5 epochs of 1,257 images at batch 64 are 100
optimizer steps, of 50 images 5 steps. These pure functions count steps the way Lightning does
(``DistributedSampler`` pads each rank to ``ceil(n / world)``; the last short batch is kept;
accumulation divides), so a callback can raise an epoch budget to a floor of steps and warn when a
fit is too short, and read the validation history afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["epochs_for_steps", "predicts_one_class", "steps_per_epoch", "still_improving"]


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1, accumulate: int = 1,
                    limit_batches: int | float = 1.0) -> int:
    """Optimizer steps in one epoch over ``num_samples`` training samples.

    Args:
        num_samples: training samples (all ranks together).
        batch_size: samples per batch on one rank.
        world_size: processes (devices x nodes).
        accumulate: batches per optimizer step (``accumulate_grad_batches``).
        limit_batches: Lightning's ``limit_train_batches``: a fraction of the batches, or a count.

    Raises:
        ValueError: a non-positive size, or a negative limit.
    """
    if num_samples < 0 or batch_size < 1 or world_size < 1 or accumulate < 1:
        raise ValueError(f"steps_per_epoch: need num_samples >= 0 and batch_size, world_size, accumulate >= 1; got "
                         f"{num_samples}, {batch_size}, {world_size}, {accumulate}.")
    if limit_batches < 0:
        raise ValueError(f"steps_per_epoch: limit_batches={limit_batches} must be >= 0.")
    batches = math.ceil(math.ceil(num_samples / world_size) / batch_size)
    if isinstance(limit_batches, float):
        batches = int(batches * limit_batches) if limit_batches < 1.0 else batches
    else:
        batches = min(batches, int(limit_batches))
    return math.ceil(batches / accumulate)


def epochs_for_steps(min_steps: int, per_epoch: int) -> int:
    """Fewest whole epochs of ``per_epoch`` steps that reach ``min_steps`` (at least 1).

    Raises:
        ValueError: ``per_epoch`` < 1 (an empty train loader) or ``min_steps`` < 0.
    """
    if per_epoch < 1:
        raise ValueError(f"epochs_for_steps: per_epoch={per_epoch}; the train loader has no batches.")
    if min_steps < 0:
        raise ValueError(f"epochs_for_steps: min_steps={min_steps} must be >= 0.")
    return max(1, math.ceil(min_steps / per_epoch))


def still_improving(values: Sequence[float], mode: str = "min", tail: float = 0.25, min_gain: float = 0.01) -> bool:
    """Whether a validation curve was still getting better when training stopped ("train longer").

    True when the best value is in the last epoch and the last ``tail`` fraction of epochs improved
    it by more than ``min_gain`` (relative): a curve that has flattened or turned is not improving.
    Needs 3 or more points.

    Raises:
        ValueError: ``mode`` not ``min``/``max``, or ``tail`` outside (0, 1).
    """
    if mode not in ("min", "max"):
        raise ValueError(f"still_improving: mode={mode!r}; use 'min' (a loss) or 'max' (an accuracy).")
    if not 0.0 < tail < 1.0:
        raise ValueError(f"still_improving: tail={tail} must be in (0, 1) (a fraction of the epochs).")
    finite = [float(v) for v in values if math.isfinite(v)]
    if len(finite) < 3 or len(finite) != len(values):
        return False
    sign = 1.0 if mode == "min" else -1.0
    score = [sign * v for v in finite]
    if min(score) < score[-1]:
        return False
    start = max(0, len(score) - 1 - max(1, round(tail * len(score))))
    before = score[start]
    return before - score[-1] > min_gain * max(abs(before), 1e-12)


def predicts_one_class(counts: Sequence[int], share: float = 0.95) -> int | None:
    """The class that takes at least ``share`` of all predictions (a collapsed model), else ``None``."""
    total = sum(int(c) for c in counts)
    if total == 0 or len(counts) < 2:
        return None
    top = max(range(len(counts)), key=lambda i: counts[i])
    return top if counts[top] >= share * total else None
