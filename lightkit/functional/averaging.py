"""Weight averaging as pure torch functions: EMA with warm-up decay, SWA running mean.

Both update a list of averaged tensors in place from the matching list of current tensors, so
they serve torch's ``AveragedModel(multi_avg_fn=...)`` (what :class:`lightkit.callbacks.ema.EMA`
and :class:`lightkit.callbacks.swa.SWA` use), a hand-written training loop or a state dict alike.
Floating-point tensors are averaged; integer tensors (BatchNorm's ``num_batches_tracked``) are
copied from the current model, since a fractional step count means nothing.

No Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["EMAAverager", "SWAAverager", "ema_decay", "ema_update_", "swa_update_"]


def ema_decay(num_updates: int, decay: float, warmup: bool = True) -> float:
    """Decay of the EMA update number ``num_updates``: ``min(decay, (1 + t) / (10 + t))`` with warm-up.

    The warm-up is TensorFlow's ``tf.train.ExponentialMovingAverage(decay, num_updates=t)`` rule
    (the one timm's early ``ModelEma`` ports followed): the effective decay starts near 0.1 and
    approaches ``decay`` after roughly ``10 / (1 - decay)`` updates, so the average follows the fast
    early changes of the weights instead of keeping the random initialisation for ``1 / (1 - decay)``
    steps. That makes EMA useful in short fine-tuning runs.

    Args:
        num_updates: ``t``, how many updates the average has received before this one (>= 0).
        decay: the target decay per update, in [0, 1); 0.999 averages over ~1000 updates.
        warmup: apply the warm-up rule; ``False`` returns ``decay`` unchanged.

    Returns:
        The decay to use for this update.

    Raises:
        ValueError: ``decay`` outside [0, 1) or negative ``num_updates``.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay: decay={decay} must be in [0, 1); 0.999 averages over ~1000 updates.")
    if num_updates < 0:
        raise ValueError(f"ema_decay: num_updates={num_updates} must be >= 0 (updates done so far).")
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


def _split(averaged: Sequence[Tensor], current: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    if len(averaged) != len(current):
        raise ValueError(f"averaging: {len(averaged)} averaged tensors for {len(current)} current ones; "
                         f"pass matching lists (the same model's parameters and buffers, in order).")
    floats_avg, floats_cur = [], []
    with torch.no_grad():
        for avg, cur in zip(averaged, current, strict=True):
            cur = cur.detach().to(avg.device)
            if avg.is_floating_point() or avg.is_complex():
                floats_avg.append(avg)
                floats_cur.append(cur.to(avg.dtype))
            else:
                avg.copy_(cur)
    return floats_avg, floats_cur


@torch.no_grad()
def ema_update_(averaged: Sequence[Tensor], current: Sequence[Tensor], decay: float) -> None:
    """EMA step in place: ``averaged <- decay * averaged + (1 - decay) * current``.

    Args:
        averaged: the running averages, updated in place.
        current: the current values, same order and shapes.
        decay: weight of the old average, in [0, 1] (0 copies ``current``).

    Raises:
        ValueError: ``decay`` outside [0, 1] or lists of different lengths.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_update_: decay={decay} must be in [0, 1]; compute it with ema_decay().")
    avg, cur = _split(averaged, current)
    if avg:
        torch._foreach_lerp_(avg, cur, 1.0 - decay)


@torch.no_grad()
def swa_update_(averaged: Sequence[Tensor], current: Sequence[Tensor], num_averaged: int) -> None:
    """SWA step in place, the equal-weight running mean: ``averaged <- averaged + (current - averaged) / (n + 1)``.

    (Izmailov et al. 2018, https://arxiv.org/abs/1803.05407, eq. in Algorithm 1.)

    Args:
        averaged: mean of the ``num_averaged`` models seen so far, updated in place.
        current: the model to fold in, same order and shapes.
        num_averaged: ``n``, models already in the mean (>= 0; 0 copies ``current``).

    Raises:
        ValueError: negative ``num_averaged`` or lists of different lengths.
    """
    if num_averaged < 0:
        raise ValueError(f"swa_update_: num_averaged={num_averaged} must be >= 0 (models already averaged).")
    avg, cur = _split(averaged, current)
    if avg:
        torch._foreach_lerp_(avg, cur, 1.0 / (num_averaged + 1))


class EMAAverager:
    """``multi_avg_fn`` for torch's ``AveragedModel``: :func:`ema_update_` with :func:`ema_decay`.

    ``AveragedModel`` copies the weights on its first update and then calls this with
    ``num_averaged`` = updates done so far (1, 2, ...), which is the ``t`` of :func:`ema_decay`.
    A class rather than a closure so that callbacks holding it pickle.

    Args:
        decay: target decay per update, in [0, 1).
        warmup: use the warm-up rule of :func:`ema_decay`.
    """

    def __init__(self, decay: float, warmup: bool = True) -> None:
        ema_decay(0, decay, warmup)  # validates
        self.decay = decay
        self.warmup = warmup

    def __call__(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        ema_update_(averaged, current, ema_decay(int(num_averaged), self.decay, self.warmup))


class SWAAverager:
    """``multi_avg_fn`` for torch's ``AveragedModel``: :func:`swa_update_` (integer buffers copied)."""

    def __call__(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        swa_update_(averaged, current, int(num_averaged))
