"""LR range test maths (Smith 2017, arXiv:1506.01186; fastai ``lr_find``): sweep, smoothing, suggestion rules.

Pure functions over the swept learning rates ``lrs`` (increasing) and the losses measured at them;
no Lightning import, so a plain PyTorch loop can use them too:

    lrs = [range_test_lr(i / (n - 1), 1e-7, 10.0) for i in range(n)]
    ...train one step at each lr, record the loss...
    smoothed = smooth_losses(losses)
    lr = valley(lrs, smoothed)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "MIN_POINTS",
    "SUGGESTIONS",
    "SweepMode",
    "Suggestion",
    "TooFewPointsError",
    "clr_bounds",
    "diverged",
    "minimum",
    "range_test_lr",
    "smooth_losses",
    "steepest",
    "suggest",
    "valley",
]

SweepMode = Literal["exponential", "linear"]
Suggestion = Literal["valley", "steepest", "minimum"]
SUGGESTIONS: tuple[str, ...] = ("valley", "steepest", "minimum")

MIN_POINTS = 5
"""Fewest (lr, loss) points a suggestion rule accepts: below that the curve has no shape to read."""


class TooFewPointsError(ValueError):
    """A suggestion rule was given fewer than :data:`MIN_POINTS` points."""


def range_test_lr(pos: float, start_lr: float, end_lr: float, mode: SweepMode = "exponential") -> float:
    """LR of the range test at progress ``pos`` in [0, 1] (0: ``start_lr``, 1: ``end_lr``).

    Exponential (fastai's default) spends as many steps per decade at 1e-6 as at 1e-1; linear is
    Smith's original sweep and suits a narrow range.

    Raises:
        ValueError: ``pos`` outside [0, 1], non-positive LRs, ``end_lr <= start_lr`` or an unknown mode.
    """
    if not 0.0 <= pos <= 1.0:
        raise ValueError(f"range_test_lr: pos={pos} must be in [0, 1] (fraction of the sweep).")
    if not 0.0 < start_lr < end_lr:
        raise ValueError(f"range_test_lr: need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}.")
    if mode == "exponential":
        return start_lr * (end_lr / start_lr) ** pos
    if mode == "linear":
        return start_lr + (end_lr - start_lr) * pos
    raise ValueError(f"range_test_lr: mode={mode!r}; choose 'exponential' or 'linear'.")


def smooth_losses(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction (Adam's ``1 - beta**t``), as fastai smooths the sweep.

    ``avg_t = beta * avg_{t-1} + (1 - beta) * loss_t``; returned ``avg_t / (1 - beta**t)`` so the first
    values are not pulled towards 0. ``beta=0`` returns the losses unchanged.

    Raises:
        ValueError: ``beta`` outside [0, 1).
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"smooth_losses: beta={beta} must be in [0, 1) (0 disables smoothing).")
    out: list[float] = []
    avg = 0.0
    for t, loss in enumerate(losses, start=1):
        avg = beta * avg + (1.0 - beta) * float(loss)
        out.append(avg / (1.0 - beta**t))
    return out


def diverged(loss: float, best: float, diverge_factor: float) -> bool:
    """Whether the sweep should stop: ``loss`` is NaN/Inf or above ``diverge_factor`` times the ``best`` so far."""
    return not math.isfinite(loss) or loss > diverge_factor * best


def _check(rule: str, lrs: Sequence[float], losses: Sequence[float]) -> None:
    if len(lrs) != len(losses):
        raise ValueError(f"{rule}: {len(lrs)} lrs but {len(losses)} losses; pass one loss per lr.")
    if len(lrs) < MIN_POINTS:
        raise TooFewPointsError(
            f"{rule}: {len(lrs)} points, need at least {MIN_POINTS}; run more sweep steps (num_steps) "
            f"or lower end_lr so the loss diverges later."
        )
    if any(not (math.isfinite(v) and v > 0) for v in lrs):
        raise ValueError(f"{rule}: every lr must be finite and > 0; got {list(lrs)}.")
    if any(b <= a for a, b in zip(lrs, lrs[1:], strict=False)):
        raise ValueError(f"{rule}: lrs must be strictly increasing (the order of the sweep).")
    if any(not math.isfinite(v) for v in losses):
        raise ValueError(f"{rule}: losses must be finite; drop the NaN/Inf points of a diverged sweep first.")


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: an LR inside the longest descending stretch of the loss curve.

    Finds the longest strictly decreasing subsequence of ``losses`` (O(n^2), as fastai) from index
    ``start`` to ``end`` (taken as contiguous) and returns ``lrs[start + s + s // 2]`` with
    ``s = (end - start) // 3``:
    halfway through the middle third, far from both the flat start and the divergence.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: lengths differ, lrs not increasing/positive, or non-finite losses.
    """
    _check("valley", lrs, losses)
    n = len(losses)
    lds = [1] * n  # length of the longest decreasing subsequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            # fastai writes ``max_end - lds[max_end]``, one before the run's first point.
            max_start = max_end - lds[max_end] + 1
    third = (max_end - max_start) // 3
    return float(lrs[max_start + third + third // 2])


def steepest(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The LR where the loss falls fastest against log LR (fastai's ``steep``).

    Slope of segment i is ``(loss[i+1] - loss[i]) / (ln lr[i+1] - ln lr[i])``; returns ``lrs[i]`` of the
    most negative one (the first on ties).

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: as :func:`valley`.
    """
    _check("steepest", lrs, losses)
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    return float(lrs[min(range(len(slopes)), key=slopes.__getitem__)])


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """One tenth of the LR at the lowest loss (fastai's ``minimum``): the minimum itself is already too hot.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: as :func:`valley`.
    """
    _check("minimum", lrs, losses)
    return float(lrs[min(range(len(losses)), key=losses.__getitem__)]) / 10.0


def clr_bounds(lrs: Sequence[float], losses: Sequence[float], threshold: float = 0.1) -> tuple[float, float]:
    """``(base_lr, max_lr)`` for a triangular cyclical schedule, Smith's step 1 (arXiv:1506.01186, sec. 3.3).

    Smith reads off where the loss starts falling (``base_lr``) and where it stops falling (``max_lr``).
    With ``drop = losses[0] - min(losses)`` measured up to the minimum, ``base_lr`` is the first LR whose
    loss has fallen by ``threshold * drop`` and ``max_lr`` the first whose loss has fallen by
    ``(1 - threshold) * drop``: the fraction keeps noise at either end from deciding the bounds.

    Args:
        lrs: swept LRs, increasing.
        losses: (smoothed) loss at each LR.
        threshold: fraction of the total drop, in (0, 0.5).

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: ``threshold`` outside (0, 0.5), the loss never falls, or as :func:`valley`.
    """
    _check("clr_bounds", lrs, losses)
    if not 0.0 < threshold < 0.5:
        raise ValueError(f"clr_bounds: threshold={threshold} must be in (0, 0.5) (fraction of the loss drop).")
    low = min(range(len(losses)), key=losses.__getitem__)
    drop = losses[0] - losses[low]
    if drop <= 0:
        raise ValueError(
            "clr_bounds: the loss never falls below its first value; lower start_lr or check the model trains."
        )
    base = next(i for i in range(low + 1) if losses[0] - losses[i] >= threshold * drop)
    top = next(i for i in range(low + 1) if losses[0] - losses[i] >= (1.0 - threshold) * drop)
    return float(lrs[base]), float(lrs[top])


def suggest(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """All three suggestions, ``{"valley": ..., "steepest": ..., "minimum": ...}``.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: as :func:`valley`.
    """
    return {"valley": valley(lrs, losses), "steepest": steepest(lrs, losses), "minimum": minimum(lrs, losses)}
