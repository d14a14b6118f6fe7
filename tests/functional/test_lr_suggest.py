"""Golden values for the LR range test rules on a hand-computable curve and on recorded sweeps."""

from __future__ import annotations

import math

import pytest

from lightkit.functional.lr_suggest import (
    SweepEdgeWarning,
    TooFewPointsError,
    clr_bounds,
    diverged,
    filter_losses,
    minimum,
    range_test_lr,
    robust_valley,
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


def test_suggest_reports_every_rule() -> None:
    # Issue 16 added robust_valley (the default); steepest now reads the median-filtered raw curve.
    out = suggest(LRS, LOSSES)
    assert list(out) == ["robust_valley", "valley", "steepest", "minimum"]
    assert out == pytest.approx({"robust_valley": robust_valley(LRS, LOSSES), "valley": 1e-2,
                                 "steepest": steepest(LRS, filter_losses(LOSSES)), "minimum": 1.0})


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


@pytest.mark.parametrize("rule", [valley, robust_valley, steepest, minimum, clr_bounds, suggest])
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
    with pytest.raises(ValueError, match=r"suggest: 9 raw losses but 10 smoothed ones"):
        suggest(LRS, LOSSES, raw=LOSSES[:-1])


def test_bad_skip_and_window() -> None:
    with pytest.raises(ValueError, match=r"steepest: skip_start=0.5 must be in \[0, 0.5\)"):
        steepest(LRS, LOSSES, skip_start=0.5)
    with pytest.raises(ValueError, match=r"robust_valley: skip_start=-0.1 must be in \[0, 0.5\)"):
        robust_valley(LRS, LOSSES, skip_start=-0.1)
    with pytest.raises(ValueError, match=r"robust_valley: fraction=1.0 must be in \(0, 1\) \(share of the fall"):
        robust_valley(LRS, LOSSES, fraction=1.0)
    with pytest.raises(TooFewPointsError, match=r"minimum: 5 points leave 2 after skip_start=0.45; run more sweep"):
        minimum(LRS[:5], LOSSES[:5], skip_start=0.45)
    with pytest.raises(ValueError, match=r"filter_losses: window=4 must be an odd number >= 1"):
        filter_losses(LOSSES, window=4)
    with pytest.raises(ValueError, match=r"filter_losses: window=0 must be an odd number >= 1"):
        robust_valley(LRS, LOSSES, window=0)
    with pytest.raises(ValueError, match=r"clr_bounds: the loss never falls after its first 1 points"):
        clr_bounds(LRS, [float(i) for i in range(10)])


def test_filter_removes_spikes_without_lag() -> None:
    step = [2.0] * 10 + [1.0] * 10
    spiky = list(step)
    spiky[0], spiky[14] = 60.0, 18.0
    out = filter_losses(spiky, window=5)
    assert max(out) < 2.01 and out[14] == pytest.approx(1.0)  # the spikes are gone
    assert out[:8] == pytest.approx([2.0] * 8) and out[12:] == pytest.approx([1.0] * 8)  # the step stays at 10
    assert filter_losses(spiky, window=1) == spiky
    assert len(filter_losses(list(range(100)))) == 100


def test_steepest_skips_the_noisy_start() -> None:
    # The first segment (a fresh model's spike) falls fastest; issue 16 got the sweep's first point, 1e-7.
    losses = [4.0, 2.3, 2.3, 2.3, 2.3, 2.2, 1.8, 1.0, 0.6, 3.0]
    with pytest.warns(SweepEdgeWarning, match=r"steepest: lr=1e-06 lies at the start of the usable sweep"):
        assert steepest(LRS, losses, skip_start=0.0) == pytest.approx(1e-6)  # the old behaviour, now warned
    assert steepest(LRS, losses) == pytest.approx(1e0)  # 1.8 -> 1.0 per decade


@pytest.mark.parametrize(
    ("rule", "losses", "match"),
    [
        (steepest, [2.3, 2.0, 1.7, 1.5, 1.4, 1.35, 1.3, 1.28, 1.27, 1.26],
         r"steepest: lr=1e-05 lies at the start of the usable sweep \(point 1 of 10\), so the LR this rule looks for "
         r"may lie below the sweep. Lower start_lr \(e.g. to 1e-08\) or raise num_steps"),
        (steepest, [2.3, 2.3, 2.3, 2.3, 2.29, 2.28, 2.27, 2.25, 2.2, 1.0],
         r"steepest: lr=100 lies at the end of the sweep \(point 8 of 10\); the loss was still falling there, .* "
         r"Raise end_lr \(now 1e\+03\) or diverge_factor"),
        (minimum, [2.3, 2.3, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.8],
         r"minimum: lr=1e\+03 lies at the end of the sweep"),
        (robust_valley, [2.3, 2.3, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.8],
         r"robust_valley \(lowest loss\): lr=1e\+03 lies at the end of the sweep \(point 9 of 10\).* Raise end_lr"),
        (robust_valley, [2.3, 0.9, 0.85, 0.84, 0.83, 0.82, 0.81, 0.80, 0.79, 2.0],
         r"robust_valley: lr=0.0001 lies at the start of the usable sweep \(point 2 of 10\).* Lower start_lr"),
    ],
)
def test_edge_answers_warn(rule, losses: list[float], match: str) -> None:
    with pytest.warns(SweepEdgeWarning, match=match):
        rule(LRS, losses)


def test_clr_bounds_ignore_a_spike_at_the_start_and_warn_at_edges() -> None:
    # A spike at the first point made the old base_lr the sweep's second point (issue 16: 1.2e-7).
    spiky = [6.0, 2.0, 2.0, 1.9, 1.7, 1.2, 0.8, 0.5, 0.4, 5.0]
    assert clr_bounds(LRS, spiky) == pytest.approx((1e-2, 10.0))  # 10 % and 90 % of the fall from 2.0 to 0.4
    with pytest.warns(SweepEdgeWarning, match=r"clr_bounds base_lr: lr=1e-05 lies at the start of the usable sweep"):
        clr_bounds(LRS, spiky, skip_start=0.0)
    with pytest.warns(SweepEdgeWarning, match=r"clr_bounds \(lowest loss\): lr=1e\+03 lies at the end of the sweep"):
        clr_bounds(LRS, [2.3, 2.3, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.8])


# -- recorded sweeps --------------------------------------------------------------------------------------
# Raw losses of LRRangeTest's default sweep (1e-7 .. 10, 100 steps, stopped at divergence) from
# benchmarks/lr_grid.py (lr_grid_results.json, rounded to 3 decimals). The first one starts with a spike
# (2.85 over a ~2.6 plateau): the old steepest returned the sweep's first point on it, as in issue 16.
MNIST_SGD_SEED2 = [
    2.848, 2.417, 2.58, 2.748, 2.564, 2.594, 2.704, 2.448, 2.664, 2.684, 2.721, 2.435, 2.586, 2.762, 2.524,
    2.553, 2.752, 2.692, 2.6, 2.601, 2.646, 2.537, 2.378, 2.527, 2.706, 2.668, 2.677, 2.723, 2.683, 2.817,
    2.766, 2.71, 2.622, 2.589, 2.53, 2.579, 2.657, 2.633, 2.42, 2.723, 2.505, 2.413, 2.574, 2.399, 2.363,
    2.423, 2.299, 2.236, 2.335, 2.207, 2.107, 2.135, 2.003, 1.862, 1.766, 1.698, 1.629, 1.444, 1.36, 1.43,
    1.239, 1.211, 1.1, 1.003, 0.931, 0.695, 0.864, 0.65, 0.729, 0.408, 0.764, 0.469, 0.421, 0.463, 0.609,
    0.616, 0.321, 1.176, 1.483, 1.602, 2.555, 3.254, 11.121, 14.915, 9.758, 6.309, 8.019, 3.495, 2.702,
    1.774, 1.607, 1.261, 1.171, 3.269, 4.743, 5.157, 5.328, 3.034, 23.656, 124.328,
]

MNIST_ADAMW_SEED0 = [
    2.52, 2.543, 2.549, 2.569, 2.425, 2.694, 2.437, 2.532, 2.607, 2.504, 2.392, 2.685, 2.546, 2.628, 2.475,
    2.483, 2.583, 2.549, 2.59, 2.522, 2.47, 2.525, 2.366, 2.347, 2.518, 2.43, 2.595, 2.723, 2.512, 2.478,
    2.591, 2.502, 2.375, 2.385, 2.383, 2.297, 2.24, 2.368, 2.141, 2.162, 2.063, 2.025, 2.008, 2.036, 1.718,
    1.762, 1.614, 1.324, 1.495, 1.238, 1.007, 1.086, 1.126, 0.843, 0.96, 0.843, 0.818, 0.568, 0.604, 0.454,
    0.627, 0.443, 0.4, 0.316, 0.534, 0.308, 0.596, 0.422, 0.381, 0.282, 0.706, 0.567, 1.328, 3.587, 2.669,
    1.341, 2.368, 1.098, 1.839, 1.875, 2.151, 2.078, 1.211, 1.052, 1.101, 0.858, 2.239, 6.043, 10.3, 19.122,
    17.077, 30.474, 172.359,
]

DIGITS_FT_SGD_SEED0 = [
    1.258, 1.28, 1.213, 1.082, 1.262, 1.005, 1.349, 1.027, 1.07, 1.475, 1.172, 1.25, 1.098, 1.264, 1.226,
    1.17, 0.953, 1.283, 1.033, 1.481, 1.254, 1.275, 1.207, 1.076, 1.25, 0.992, 1.329, 1.013, 1.043, 1.437,
    1.142, 1.211, 1.055, 1.223, 1.165, 1.109, 0.884, 1.183, 0.921, 1.296, 1.128, 1.071, 1.019, 0.838, 0.948,
    0.729, 0.947, 0.685, 0.68, 0.944, 0.582, 0.58, 0.541, 0.528, 0.511, 0.528, 0.344, 0.481, 0.273, 0.286,
    0.345, 0.275, 0.233, 0.251, 0.352, 0.142, 0.191, 0.088, 0.092, 0.148, 0.063, 0.071, 0.117, 0.036, 0.274,
    0.247, 0.111, 0.143, 0.159, 0.314, 0.86, 0.428, 0.4, 2.995, 6.233, 15.74, 10.078, 13.291, 8.001, 2.697,
    1.738, 2.105, 1.556, 1.757, 2.712, 2.657, 2.776, 5.03, 103.933,
]


def _lrs(losses: list[float]) -> list[float]:
    return [range_test_lr(i / 99, 1e-7, 10.0) for i in range(len(losses))]


@pytest.mark.parametrize(
    ("losses", "band", "golden", "clr"),
    [
        # MNIST-5k from scratch, SGD: band [2.8e-3, 1.2e-2]; fastai's valley 2.3e-3 is below it (issue 16).
        (MNIST_SGD_SEED2, (2.8e-3, 1.2e-2),
         {"robust_valley": 1.024e-2, "valley": 2.31e-3, "steepest": 3.352e-3, "minimum": 2.42e-2},
         (2.057e-4, 2.154e-2)),
        # MNIST-5k from scratch, AdamW: band [2.5e-4, 7.2e-3].
        (MNIST_ADAMW_SEED0, (2.5e-4, 7.2e-3),
         {"robust_valley": 1.918e-3, "valley": 5.214e-4, "steepest": 6.28e-4, "minimum": 6.579e-3},
         (6.734e-5, 4.863e-3)),
        # digits fine-tuned from the packaged encoder, SGD: band [3.9e-3, 3.3e-2]; valley 1.9e-3 is below it.
        (DIGITS_FT_SGD_SEED0, (3.9e-3, 3.3e-2),
         {"robust_valley": 4.863e-3, "valley": 1.918e-3, "steepest": 4.329e-4, "minimum": 4.229e-2},
         (8.111e-5, 1.485e-2)),
    ],
)
def test_golden_values_on_recorded_sweeps(losses, band, golden, clr) -> None:
    lrs = _lrs(losses)
    out = suggest(lrs, smooth_losses(losses), raw=losses)
    assert out == pytest.approx(golden, rel=1e-3)
    assert band[0] <= out["robust_valley"] <= band[1]
    assert clr_bounds(lrs, filter_losses(losses)) == pytest.approx(clr, rel=1e-3)


def test_old_steepest_on_a_spike_at_the_start_warns() -> None:
    lrs, smoothed = _lrs(MNIST_SGD_SEED2), smooth_losses(MNIST_SGD_SEED2)
    with pytest.warns(SweepEdgeWarning,
                      match=r"steepest: lr=1e-07 lies at the start of the usable sweep \(point 0 of 100\)"):
        assert steepest(lrs, smoothed, skip_start=0.0) == pytest.approx(1e-7)  # issue 16's answer, now warned
    assert steepest(lrs, filter_losses(MNIST_SGD_SEED2)) == pytest.approx(3.352e-3, rel=1e-3)
    # A planted spike at the first step moves none of the robust answers.
    spiky = [60.0, *MNIST_SGD_SEED2[1:]]
    assert robust_valley(lrs, spiky) == pytest.approx(robust_valley(lrs, MNIST_SGD_SEED2))
    assert clr_bounds(lrs, filter_losses(spiky)) == pytest.approx(clr_bounds(lrs, filter_losses(MNIST_SGD_SEED2)))


def test_incremental_ema_equals_smoothing_the_whole_history() -> None:
    from lightkit.functional.lr_suggest import BiasCorrectedEMA

    losses = [2.3, 2.1, 2.25, 1.9, 1.7, 1.75, 2.6, 5.0]
    ema = BiasCorrectedEMA(0.9)
    assert [ema.update(v) for v in losses] == smooth_losses(losses, 0.9)  # bit-identical, one update per step
    assert ema.count == len(losses)
    with pytest.raises(ValueError, match=r"BiasCorrectedEMA: beta=1.0 must be in \[0, 1\)"):
        BiasCorrectedEMA(1.0)
