"""LR range test maths (Smith 2017, arXiv:1506.01186; fastai ``lr_find``): sweep, smoothing, suggestion rules.

Pure functions over the swept learning rates ``lrs`` (increasing) and the losses measured at them;
no Lightning import, so a plain PyTorch loop can use them too:

    lrs = [range_test_lr(i / (n - 1), 1e-7, 10.0) for i in range(n)]
    ...train one step at each lr, record the loss...
    smoothed = smooth_losses(losses)
    lr = valley(lrs, smoothed)          # fastai's rule on the EMA curve
    lr = robust_valley(lrs, losses)     # lightkit's default: raw losses in, filtered inside

Rules whose answer lies at an edge of the usable sweep warn with :class:`SweepEdgeWarning`: the value
they would give may lie outside the swept range.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "MIN_POINTS",
    "SUGGESTIONS",
    "SKIP_START",
    "SweepEdgeWarning",
    "SweepMode",
    "Suggestion",
    "BiasCorrectedEMA",
    "TooFewPointsError",
    "clr_bounds",
    "diverged",
    "filter_losses",
    "minimum",
    "range_test_lr",
    "robust_valley",
    "smooth_losses",
    "steepest",
    "suggest",
    "valley",
]

SweepMode = Literal["exponential", "linear"]
Suggestion = Literal["robust_valley", "valley", "steepest", "minimum"]
SUGGESTIONS: tuple[str, ...] = ("robust_valley", "valley", "steepest", "minimum")

MIN_POINTS = 5
"""Fewest (lr, loss) points a suggestion rule accepts: below that the curve has no shape to read."""


SKIP_START = 0.1
"""Default fraction of the sweep's first points the robust rules ignore: a fresh model's first losses are
noisy (and its very first loss is often a spike), while at the sweep's first LRs (1e-7 .. 6e-7 by
default) nothing is learnt yet."""


class TooFewPointsError(ValueError):
    """A suggestion rule was given fewer than :data:`MIN_POINTS` points."""


class SweepEdgeWarning(UserWarning):
    """A rule's answer lies at an edge of the usable sweep, so the LR it looks for may lie outside it.

    The callback turns it into a rank-zero warning; filter it with
    ``warnings.filterwarnings("ignore", category=SweepEdgeWarning)``.
    """


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
    ema = BiasCorrectedEMA(beta)
    return [ema.update(loss) for loss in losses]


class BiasCorrectedEMA:
    """:func:`smooth_losses` one value at a time: ``update(loss)`` returns the smoothed value so far.

    A sweep that smooths as it goes (to stop at divergence) then costs O(1) per step instead of
    re-smoothing the whole history at every step.

    Raises:
        ValueError: ``beta`` outside [0, 1).
    """

    def __init__(self, beta: float = 0.98) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"BiasCorrectedEMA: beta={beta} must be in [0, 1) (0 disables smoothing).")
        self.beta = beta
        self.avg = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1.0 - self.beta) * float(loss)
        return self.avg / (1.0 - self.beta**self.count)


def filter_losses(losses: Sequence[float], window: int | None = None) -> list[float]:
    """Zero-lag smoothing of raw sweep losses: a centred running median, then a centred running mean.

    The median removes single-batch spikes (a hard batch, the noisy first steps of a fresh model)
    that an EMA would spread over its whole memory; the mean then flattens the median's steps.
    Both windows are centred, so unlike :func:`smooth_losses` (whose 0.98 EMA lags by up to ~25 of
    100 points, two decades of LR) the curve's features stay at the LR where they happen. Near the
    ends the windows shrink to the points that exist.

    Args:
        losses: raw loss per sweep step.
        window: odd window width in points, >= 1 (1 returns the losses unchanged); default
            ``max(3, n // 10)`` made odd: 11 for a 100-step sweep.

    Raises:
        ValueError: ``window`` below 1 or even.
    """
    n = len(losses)
    if window is None:
        window = max(3, n // 10) | 1
    if window < 1 or window % 2 == 0:
        raise ValueError(f"filter_losses: window={window} must be an odd number >= 1 (points of the sweep).")
    half = window // 2
    values = [float(v) for v in losses]
    median = [statistics.median(values[max(0, i - half): i + half + 1]) for i in range(n)]
    return [statistics.fmean(median[max(0, i - half): i + half + 1]) for i in range(n)]


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


def _skip(rule: str, n: int, skip_start: float) -> int:
    """Index of the first point a rule reads: ``ceil(skip_start * n)``, leaving at least 3 points."""
    if not 0.0 <= skip_start < 0.5:
        raise ValueError(
            f"{rule}: skip_start={skip_start} must be in [0, 0.5) (fraction of the sweep's points ignored at its "
            f"start; {SKIP_START} is the default)."
        )
    skip = math.ceil(skip_start * n)
    if n - skip < 3:
        raise TooFewPointsError(
            f"{rule}: {n} points leave {n - skip} after skip_start={skip_start}; run more sweep steps (num_steps) "
            f"or lower skip_start."
        )
    return skip


def _warn_edge(rule: str, lrs: Sequence[float], index: int, first: int, last: int | None = None) -> None:
    """Warn (:class:`SweepEdgeWarning`) when ``index`` is the first (``first``) or last usable point."""
    last = len(lrs) - 1 if last is None else last
    if index <= first:
        warnings.warn(
            f"{rule}: lr={lrs[index]:.3g} lies at the start of the usable sweep (point {index} of {len(lrs)}), so the "
            f"LR this rule looks for may lie below the sweep. Lower start_lr (e.g. to {lrs[0] / 100:.0e}) or raise "
            f"num_steps.",
            SweepEdgeWarning,
            stacklevel=3,
        )
    elif index >= last:
        warnings.warn(
            f"{rule}: lr={lrs[index]:.3g} lies at the end of the sweep (point {index} of {len(lrs)}); the loss was "
            f"still falling there, so the LR this rule looks for may lie above the sweep. Raise end_lr (now "
            f"{lrs[-1]:.3g}) or diverge_factor.",
            SweepEdgeWarning,
            stacklevel=3,
        )


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: an LR inside the longest descending stretch of the loss curve.

    Finds the longest strictly decreasing subsequence of ``losses`` (O(n^2), as fastai) from index
    ``start`` to ``end`` (taken as contiguous) and returns ``lrs[start + s + s // 2]`` with
    ``s = (end - start) // 3``:
    halfway through the middle third, far from both the flat start and the divergence.

    On the 0.98-EMA curve of a 100-step sweep it often lands low (issue 16: 1.6-3.4e-3 where
    3e-3 .. 3e-2 trains best): the lagging EMA of a noisy start makes a long, early "descent".
    :func:`robust_valley` is the default for that reason; this rule keeps fastai's behaviour.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: lengths differ, lrs not increasing/positive, or non-finite losses.

    Warns:
        SweepEdgeWarning: the answer is the sweep's first or last point.
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
    index = max_start + third + third // 2
    _warn_edge("valley", lrs, index, 0)
    return float(lrs[index])


def robust_valley(
    lrs: Sequence[float],
    losses: Sequence[float],
    fraction: float = 0.75,
    skip_start: float = SKIP_START,
    window: int | None = None,
) -> float:
    """The LR where the loss has done ``fraction`` of its fall: lightkit's default rule, robust to noise.

    fastai's :func:`valley` looks for a point inside the longest descent of the loss; on the 0.98-EMA
    curve of a 100-step sweep that descent is blurred by the EMA's lag and started by the noise of a
    fresh model, and the rule landed below the good band on 2 of 3 seeds (issue 16). This rule reads
    the same valley from the raw losses through :func:`filter_losses` (a centred median + mean, no
    lag), after skipping the noisy first ``ceil(skip_start * n)`` points:

    * ``low``: the lowest filtered loss; ``peak``: the highest one before it (the plateau);
    * the answer is the first LR after ``peak`` at which the loss has fallen by ``fraction`` of
      ``peak - low``.

    The levels (plateau, minimum) are averages over many points and barely move with noise, and on the
    steep part of the descent the crossing is well defined. With ``fraction=0.75`` the answer sits
    about half a decade below the minimum (a third to a fifth of its LR), near fastai's ``minimum``
    rule but without its dependence on where the flat bottom of the valley happens to be lowest.

    How 0.75 was chosen (``benchmarks/lr_grid.py``, 4 grids x 3 seeds, ``benchmarks/RESULTS.md``):
    0.6, picked first on the two MNIST-5k grids alone, missed 2 of the 3 seeds of the digits SGD
    fine-tuning grid, run afterwards as a hold-out (1.9e-3 and 3.4e-3, under the band's 3.9e-3).
    Fractions 0.75-0.8 put all 12 sweeps in band; 0.75 stays about 0.1 decade inside the nearest
    band edge on both sides (MNIST SGD above, digits SGD below). It is fitted to these grids, not
    validated beyond them.

    Args:
        lrs: swept LRs, increasing.
        losses: raw loss at each LR (filtered here; an already smoothed curve works too).
        fraction: share of the fall from plateau to minimum, in (0, 1); lower is more cautious.
        skip_start: fraction of the first points ignored, in [0, 0.5).
        window: window of :func:`filter_losses` in points (odd); default ``n // 10``.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points, or fewer than 3 after the skip.
        ValueError: ``fraction``, ``skip_start`` or ``window`` out of range, or as :func:`valley`.

    Warns:
        SweepEdgeWarning: the answer is at the start of the usable sweep (the loss was already falling
            there, or never fell), or the lowest loss is the sweep's last point (still falling when it ended).
    """
    _check("robust_valley", lrs, losses)
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"robust_valley: fraction={fraction} must be in (0, 1) (share of the fall from the plateau to the "
            f"minimum; 0.75 is the default)."
        )
    skip = _skip("robust_valley", len(lrs), skip_start)
    curve = filter_losses(losses, window)
    low = min(range(skip, len(curve)), key=curve.__getitem__)
    peak = max(range(skip, low + 1), key=curve.__getitem__)
    drop = curve[peak] - curve[low]
    index = next(i for i in range(peak, low + 1) if curve[peak] - curve[i] >= fraction * drop)
    _warn_edge("robust_valley", lrs, index, skip + 1)
    _warn_edge("robust_valley (lowest loss)", lrs, low, -1)  # still falling: the 75 % mark may lie higher
    return float(lrs[index])


def steepest(lrs: Sequence[float], losses: Sequence[float], skip_start: float = SKIP_START) -> float:
    """The LR where the loss falls fastest against log LR (fastai's ``steep``), after the noisy start.

    Slope of segment i is ``(loss[i+1] - loss[i]) / (ln lr[i+1] - ln lr[i])``; returns ``lrs[i]`` of the
    most negative one (the first on ties) among the segments from index ``ceil(skip_start * n)`` to the
    lowest loss. Without the skip, the first segments of a fresh model (whose loss jumps from batch to
    batch while nothing is learnt) won on one seed of issue 16 and returned the sweep's first point,
    1e-7; without the stop at the minimum, the fall back from a divergence can win. Pass a smoothed
    curve (:func:`filter_losses`; the callback does).

    Args:
        lrs: swept LRs, increasing.
        losses: smoothed loss at each LR.
        skip_start: fraction of the first points ignored, in [0, 0.5).

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points, or fewer than 3 after the skip.
        ValueError: ``skip_start`` outside [0, 0.5), or as :func:`valley`.

    Warns:
        SweepEdgeWarning: the steepest segment is the first one read or the last one.
    """
    _check("steepest", lrs, losses)
    skip = _skip("steepest", len(lrs), skip_start)
    low = min(range(skip, len(losses)), key=losses.__getitem__)
    # Only the way down to the minimum: after a divergence the loss can fall steeply again (a benchmark
    # sweep fell from 4.4 to 4.0 at lr 1.6, far past its minimum at 0.045).
    segments = range(skip, max(low, skip + 1))
    slopes = {i: (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in segments}
    index = min(slopes, key=slopes.__getitem__)
    _warn_edge("steepest", lrs, index, skip, last=len(lrs) - 2)
    return float(lrs[index])


def minimum(lrs: Sequence[float], losses: Sequence[float], skip_start: float = SKIP_START) -> float:
    """One tenth of the LR at the lowest loss (fastai's ``minimum``): the minimum itself is already too hot.

    The lowest loss is looked for from index ``ceil(skip_start * n)`` on.

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points, or fewer than 3 after the skip.
        ValueError: ``skip_start`` outside [0, 0.5), or as :func:`valley`.

    Warns:
        SweepEdgeWarning: the lowest loss is at the first point read (the loss never fell) or at the
            last point (it was still falling when the sweep ended).
    """
    _check("minimum", lrs, losses)
    skip = _skip("minimum", len(lrs), skip_start)
    index = min(range(skip, len(losses)), key=losses.__getitem__)
    _warn_edge("minimum", lrs, index, skip)
    return float(lrs[index]) / 10.0


def clr_bounds(
    lrs: Sequence[float], losses: Sequence[float], threshold: float = 0.1, skip_start: float = SKIP_START
) -> tuple[float, float]:
    """``(base_lr, max_lr)`` for a triangular cyclical schedule, Smith's step 1 (arXiv:1506.01186, sec. 3.3).

    Smith reads off where the loss starts falling (``base_lr``) and where it stops falling (``max_lr``).
    After the first ``ceil(skip_start * n)`` points, the curve's highest loss before its minimum is
    the reference and ``drop`` the fall from it to the minimum; ``base_lr`` is the first LR after the
    reference whose loss has fallen by ``threshold * drop`` and ``max_lr`` the first whose loss has
    fallen by ``(1 - threshold) * drop``: the fraction keeps noise at either end from deciding the
    bounds. Referencing the highest point rather than the first keeps a spike at the start (issue 16:
    ``base_lr`` = 1.2e-7, the sweep's second point) from counting as the descent.

    Args:
        lrs: swept LRs, increasing.
        losses: smoothed loss at each LR (:func:`filter_losses`; the callback passes it).
        threshold: fraction of the total drop, in (0, 0.5).
        skip_start: fraction of the first points ignored, in [0, 0.5).

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points, or fewer than 3 after the skip.
        ValueError: ``threshold`` or ``skip_start`` out of range, the loss never falls, or as :func:`valley`.

    Warns:
        SweepEdgeWarning: ``base_lr`` is the first or second point read (the loss was falling from the
            start) or the lowest loss is the last point (still falling at the end).
    """
    _check("clr_bounds", lrs, losses)
    if not 0.0 < threshold < 0.5:
        raise ValueError(f"clr_bounds: threshold={threshold} must be in (0, 0.5) (fraction of the loss drop).")
    skip = _skip("clr_bounds", len(lrs), skip_start)
    low = min(range(skip, len(losses)), key=losses.__getitem__)
    peak = max(range(skip, low + 1), key=losses.__getitem__)
    drop = losses[peak] - losses[low]
    if drop <= 0:
        raise ValueError(
            f"clr_bounds: the loss never falls after its first {skip} points (lowest at lr={lrs[low]:.3g}); lower "
            f"start_lr or check the model trains."
        )
    base = next(i for i in range(peak, low + 1) if losses[peak] - losses[i] >= threshold * drop)
    top = next(i for i in range(peak, low + 1) if losses[peak] - losses[i] >= (1.0 - threshold) * drop)
    _warn_edge("clr_bounds base_lr", lrs, base, skip + 1)
    _warn_edge("clr_bounds (lowest loss)", lrs, low, -1)  # still falling: max_lr may lie higher
    return float(lrs[base]), float(lrs[top])


def suggest(
    lrs: Sequence[float], losses: Sequence[float], raw: Sequence[float] | None = None, skip_start: float = SKIP_START
) -> dict[str, float]:
    """Every rule's suggestion, ``{"robust_valley": ..., "valley": ..., "steepest": ..., "minimum": ...}``.

    Args:
        lrs: swept LRs, increasing.
        losses: the EMA-smoothed curve (:func:`smooth_losses`), read by fastai's ``valley`` and ``minimum``.
        raw: the raw losses; ``robust_valley`` and ``steepest`` read them through :func:`filter_losses`.
            Default: ``losses``.
        skip_start: fraction of the first points the rules ignore (not ``valley``, which is fastai's).

    Raises:
        TooFewPointsError: fewer than :data:`MIN_POINTS` points.
        ValueError: as :func:`valley`, or ``raw`` of another length.

    Warns:
        SweepEdgeWarning: a rule's answer lies at an edge of the usable sweep.
    """
    raw = losses if raw is None else raw
    if len(raw) != len(losses):
        raise ValueError(f"suggest: {len(raw)} raw losses but {len(losses)} smoothed ones; pass one of each per lr.")
    _check("suggest", lrs, raw)
    filtered = filter_losses(raw)
    return {
        "robust_valley": robust_valley(lrs, raw, skip_start=skip_start),
        "valley": valley(lrs, losses),
        "steepest": steepest(lrs, filtered, skip_start=skip_start),
        "minimum": minimum(lrs, losses, skip_start=skip_start),
    }
