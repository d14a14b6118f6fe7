"""Golden values for the LR range test rules on a hand-computable curve."""

from __future__ import annotations

import math

import pytest

from lightkit.functional.lr_suggest import (
    TooFewPointsError,
    clr_bounds,
    diverged,
    minimum,
    range_test_lr,
    smooth_losses,
    steepest,
    suggest,
    valley,
)

# One decade per point, 1e-6 .. 1e3. The loss is flat, falls over 1e-4 .. 10, then diverges.
LRS = [10.0 ** (i - 6) for i in range(10)]
LOSSES = [2.0, 2.0, 1.9, 1.7, 1.2, 0.8, 0.5, 0.4, 0.9, 5.0]


def test_valley_is_inside_the_longest_descent() -> None:
    # Longest decreasing run: indices 1..7 (2.0 > 1.9 > ... > 0.4); third = 2; index 1 + 2 + 1 = 4.
    assert valley(LRS, LOSSES) == pytest.approx(1e-2)


def test_steepest_is_the_most_negative_slope_per_log_lr() -> None:
    # Drops per decade: 0, .1, .2, .5, .4, .3, .1 -> segment 3 (from 1e-3) falls fastest.
    assert steepest(LRS, LOSSES) == pytest.approx(1e-3)


def test_minimum_is_a_tenth_of_the_lr_at_the_lowest_loss() -> None:
    assert minimum(LRS, LOSSES) == pytest.approx(1.0)  # min 0.4 at lr 10


def test_clr_bounds_from_where_the_loss_starts_and_stops_falling() -> None:
    # drop = 1.6; 10 % = 0.16 first reached at 1.7 (1e-3); 90 % = 1.44 first reached at 0.5 (1e0).
    assert clr_bounds(LRS, LOSSES) == pytest.approx((1e-3, 1.0))


def test_suggest_reports_all_three() -> None:
    assert suggest(LRS, LOSSES) == pytest.approx({"valley": 1e-2, "steepest": 1e-3, "minimum": 1.0})


def test_smoothing_is_bias_corrected() -> None:
    # beta .5: avg 0.5, 1.25, 2.125 divided by 0.5, 0.75, 0.875.
    assert smooth_losses([1.0, 2.0, 3.0], beta=0.5) == pytest.approx([1.0, 5 / 3, 2.125 / 0.875])
    assert smooth_losses([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0
    assert smooth_losses([1.0, 4.0], beta=0.0) == [1.0, 4.0]


def test_sweep_lr_exponential_and_linear() -> None:
    assert range_test_lr(0.0, 1e-4, 1.0) == pytest.approx(1e-4)
    assert range_test_lr(0.5, 1e-4, 1.0) == pytest.approx(1e-2)
    assert range_test_lr(1.0, 1e-4, 1.0) == pytest.approx(1.0)
    assert range_test_lr(0.25, 1.0, 5.0, "linear") == pytest.approx(2.0)


def test_diverged() -> None:
    assert diverged(math.nan, 1.0, 4.0) and diverged(math.inf, 1.0, 4.0) and diverged(4.1, 1.0, 4.0)
    assert not diverged(3.9, 1.0, 4.0)


@pytest.mark.parametrize("rule", [valley, steepest, minimum, clr_bounds])
def test_too_few_points(rule) -> None:
    with pytest.raises(TooFewPointsError, match=r"4 points, need at least 5; run more sweep steps"):
        rule(LRS[:4], LOSSES[:4])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"10 lrs but 9 losses"):
        valley(LRS, LOSSES[:-1])
    with pytest.raises(ValueError, match=r"strictly increasing"):
        steepest(LRS[::-1], LOSSES)
    with pytest.raises(ValueError, match=r"losses must be finite"):
        minimum(LRS, [*LOSSES[:-1], math.nan])
    with pytest.raises(ValueError, match=r"the loss never falls"):
        clr_bounds(LRS, [float(i) for i in range(10)])
    with pytest.raises(ValueError, match=r"threshold=0.6"):
        clr_bounds(LRS, LOSSES, threshold=0.6)
    with pytest.raises(ValueError, match=r"beta=1.0 must be in \[0, 1\)"):
        smooth_losses([1.0], beta=1.0)
    with pytest.raises(ValueError, match=r"need 0 < start_lr < end_lr"):
        range_test_lr(0.5, 1.0, 1e-3)
    with pytest.raises(ValueError, match=r"mode='cubic'"):
        range_test_lr(0.5, 1e-3, 1.0, "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"pos=1.5"):
        range_test_lr(1.5, 1e-3, 1.0)
