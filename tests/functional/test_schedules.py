"""Golden values for every schedule in lightkit.functional.schedules, plus torch's schedulers as oracles."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from lightkit.functional import schedules as S

SQRT1_2 = 1.0 / math.sqrt(2.0)

# (schedule, {step: expected factor}); hand-computed from the formulas in the docstrings.
GOLDEN = {
    "constant": (S.constant, {0: 1.0, 7: 1.0, 1e6: 1.0}),
    "step_decay": (partial(S.step_decay, step_size=10, gamma=0.5), {0: 1.0, 9: 1.0, 10: 0.5, 25: 0.25}),
    "multistep": (
        partial(S.multistep, milestones=[10, 20], gamma=0.1),
        {0: 1.0, 9.5: 1.0, 10: 0.1, 19: 0.1, 20: 0.01, 99: 0.01},
    ),
    "linear": (partial(S.linear, total_steps=100), {0: 1.0, 25: 0.75, 50: 0.5, 100: 0.0, 150: 0.0}),
    "linear_final": (partial(S.linear, total_steps=100, final_factor=0.2), {0: 1.0, 50: 0.6, 100: 0.2}),
    "inverse_sqrt": (partial(S.inverse_sqrt, timescale=100), {0: 1.0, 100: SQRT1_2, 300: 0.5, 800: 1 / 3}),
    "cosine": (
        partial(S.cosine, total_steps=100),
        {0: 1.0, 25: 0.8535533906, 50: 0.5, 75: 0.1464466094, 100: 0.0, 200: 0.0},
    ),
    "cosine_final": (partial(S.cosine, total_steps=100, final_factor=0.1), {0: 1.0, 50: 0.55, 100: 0.1}),
    "exponential": (partial(S.exponential, gamma=0.5, every=10), {0: 1.0, 5: SQRT1_2, 10: 0.5, 30: 0.125}),
    "sgdr": (partial(S.sgdr, period=10), {0: 1.0, 5: 0.5, 9.999999: 0.0, 10: 1.0, 15: 0.5, 20: 1.0}),
    "sgdr_mult_decay": (
        partial(S.sgdr, period=10, period_mult=2, peak_decay=0.5),
        {0: 1.0, 5: 0.5, 10: 0.5, 20: 0.25, 30: 0.25, 50: 0.125, 70: 0.125},
    ),
    "sgdr_final": (partial(S.sgdr, period=10, final_factor=0.2), {0: 1.0, 5: 0.6, 10: 1.0}),
    "triangular": (
        partial(S.cyclic, step_size=10),
        {0: 0.25, 5: 0.625, 10: 1.0, 15: 0.625, 20: 0.25, 30: 1.0},
    ),
    "triangular2": (
        partial(S.cyclic, step_size=10, mode="triangular2"),
        {0: 0.25, 10: 1.0, 30: 0.625, 50: 0.4375},
    ),
    "exp_range": (
        partial(S.cyclic, step_size=10, mode="exp_range", gamma=0.99),
        {0: 0.25, 10: 0.25 + 0.75 * 0.99**10},
    ),
    # up_end = 0.3 * 100 - 1 = 29, down_end = 99 (torch's phase boundaries)
    "one_cycle": (
        partial(S.one_cycle, total_steps=100),
        {0: 0.04, 7.25: 0.1805887450, 14.5: 0.52, 29: 1.0, 64: 0.500002, 99: 4e-6, 120: 4e-6},
    ),
    "one_cycle_linear": (
        partial(S.one_cycle, total_steps=100, anneal="linear"),
        {0: 0.04, 7.25: 0.28, 29: 1.0, 64: 0.500002, 99: 4e-6},
    ),
    "one_cycle_momentum": (
        partial(S.one_cycle_momentum, total_steps=100),
        {0: 0.95, 14.5: 0.90, 29: 0.85, 64: 0.90, 99: 0.95},
    ),
    "warmup_constant": (S.with_warmup(S.constant, 10), {0: 0.0, 5: 0.5, 10: 1.0, 50: 1.0}),
    "warmup_start": (S.with_warmup(S.constant, 10, start_factor=0.1), {0: 0.1, 5: 0.55, 10: 1.0}),
    "warmup_cosine": (
        S.with_warmup(partial(S.cosine, total_steps=100), 10),
        {5: 0.5, 10: 1.0, 60: 0.5, 110: 0.0},
    ),
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_golden_values(key: str) -> None:
    fn, golden = GOLDEN[key]
    for step, expected in golden.items():
        assert fn(step) == pytest.approx(expected, abs=1e-9), f"{key} at step {step}"


ALL = {k: fn for k, (fn, _) in GOLDEN.items() if not k.startswith("warmup") and k != "one_cycle_momentum"}


@pytest.mark.parametrize("key", list(ALL))
@pytest.mark.parametrize("start_factor", [0.0, 0.25])
def test_warmup_composes_with_each(key: str, start_factor: float) -> None:
    fn, warm = ALL[key], 8
    composed = S.with_warmup(fn, warm, start_factor)
    ramp = [composed(t) for t in range(warm + 1)]
    expected = [fn(0) * (start_factor + (1 - start_factor) * t / warm) for t in range(warm + 1)]
    assert ramp == pytest.approx(expected)
    assert all(b >= a for a, b in zip(ramp[:-1], ramp[1:], strict=True))  # monotone ramp
    for t in (0, 3, 17, 40, 95):
        assert composed(warm + t) == fn(t)  # the schedule proper is shifted, unchanged
    assert S.with_warmup(fn, 0)(13) == fn(13)


def _torch_sequence(make, steps: int, lr: float = 1.0, **opt_kwargs) -> tuple[list[float], list[float]]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9, **opt_kwargs)
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    return lrs, moms


ORACLES = {
    "step": (
        lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
        partial(S.step_decay, step_size=7, gamma=0.5),
    ),
    "multistep": (
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 12], 0.3),
        partial(S.multistep, milestones=[5, 12], gamma=0.3),
    ),
    "linear": (
        lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=30),
        partial(S.linear, total_steps=30),
    ),
    "exponential": (
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
        partial(S.exponential, gamma=0.9),
    ),
    "cosine": (
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 30, eta_min=0.1),
        partial(S.cosine, total_steps=30, final_factor=0.1),
    ),
    "sgdr": (
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 6, T_mult=2, eta_min=0.05),
        partial(S.sgdr, period=6, period_mult=2, final_factor=0.05),
    ),
    "triangular2": (
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.25, 1.0, step_size_up=5, mode="triangular2", cycle_momentum=False
        ),
        partial(S.cyclic, step_size=5, div_factor=4.0, mode="triangular2"),
    ),
    "exp_range": (
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.25, 1.0, step_size_up=5, mode="exp_range", gamma=0.97, cycle_momentum=False
        ),
        partial(S.cyclic, step_size=5, div_factor=4.0, mode="exp_range", gamma=0.97),
    ),
    "one_cycle": (
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, 1.0, total_steps=40, pct_start=0.25, anneal_strategy="cos"
        ),
        partial(S.one_cycle, total_steps=40, pct_start=0.25),
    ),
    "one_cycle_linear": (
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, 1.0, total_steps=40, div_factor=10, final_div_factor=100, anneal_strategy="linear"
        ),
        partial(S.one_cycle, total_steps=40, div_factor=10, final_div_factor=100, anneal="linear"),
    ),
}


@pytest.mark.parametrize("key", list(ORACLES))
def test_matches_torch_scheduler(key: str) -> None:
    make, fn = ORACLES[key]
    steps = 31 if key == "cosine" else 40  # torch's cosine climbs again after T_max; ours holds the floor
    lrs, _ = _torch_sequence(make, steps)
    assert lrs == pytest.approx([fn(t) for t in range(steps)], abs=1e-7)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_momentum_matches_torch_and_is_inverse(anneal: str) -> None:
    make = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1.0, total_steps=50, anneal_strategy=anneal)
    lrs, moms = _torch_sequence(make, 50)
    mine = [S.one_cycle_momentum(t, 50, anneal=anneal) for t in range(50)]
    assert moms == pytest.approx(mine, abs=1e-9)
    peak = max(range(50), key=lambda t: lrs[t])
    assert (
        mine[0] == pytest.approx(0.95)
        and mine[peak] == pytest.approx(0.85)
        and mine[-1] == pytest.approx(0.95)
    )
    assert min(range(50), key=lambda t: mine[t]) == peak  # momentum lowest where the LR is highest


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.constant(-1), r"step=-1 must be >= 0"),
        (lambda: S.step_decay(0, step_size=0), r"step_size=0 must be > 0"),
        (lambda: S.step_decay(0, step_size=5, gamma=1.5), r"gamma=1.5 must be in \(0, 1\]"),
        (lambda: S.multistep(0, [20, 10]), r"milestones=\[20, 10\] must be .* strictly increasing"),
        (lambda: S.multistep(0, []), r"must be non-empty"),
        (lambda: S.linear(0, total_steps=10, final_factor=1.0), r"final_factor=1.0 must be in \[0, 1\)"),
        (lambda: S.cosine(0, total_steps=-3), r"total_steps=-3 must be > 0"),
        (lambda: S.inverse_sqrt(0, timescale=0), r"timescale=0 must be > 0"),
        (lambda: S.exponential(0, gamma=0.0), r"gamma=0.0 must be in \(0, 1\]"),
        (lambda: S.sgdr(0, period=5, period_mult=0.5), r"period_mult=0.5 must be >= 1"),
        (lambda: S.sgdr(0, period=5, peak_decay=0.0), r"peak_decay=0.0 must be in \(0, 1\]"),
        (lambda: S.cyclic(0, step_size=5, div_factor=1.0), r"div_factor=1.0 must be > 1"),
        (lambda: S.cyclic(0, step_size=5, mode="sine"), r"mode='sine' is not one of"),
        (lambda: S.one_cycle(0, total_steps=100, pct_start=1.0), r"pct_start=1.0 must be in \(0, 1\)"),
        (lambda: S.one_cycle(0, total_steps=3, pct_start=0.3), r"leaves no rising phase"),
        (lambda: S.one_cycle(0, total_steps=100, div_factor=0.5), r"div_factor=0.5 .* must be >= 1"),
        (lambda: S.one_cycle(0, total_steps=100, anneal="exp"), r"anneal='exp' is not one of"),
        (lambda: S.one_cycle_momentum(0, total_steps=100, base_momentum=0.96), r"base_momentum \(0.96\) <= "
                                                                               r"max_momentum"),
        (lambda: S.with_warmup(S.constant, -1), r"warmup_steps=-1 must be >= 0"),
        (lambda: S.with_warmup(S.constant, 5, start_factor=2.0), r"start_factor=2.0 must be in \[0, 1\]"),
    ],
)
def test_raises(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_sgdr_restart_steps_exact_with_period_mult() -> None:
    # Restarts at 4, 12, 28, 60 (period 4, doubling); a closed-form log would misplace some of them.
    for restart in (4, 12, 28, 60):
        assert S.sgdr(restart, period=4, period_mult=2) == 1.0
        assert S.sgdr(restart - 1e-9, period=4, period_mult=2) == pytest.approx(0.0, abs=1e-6)


def test_linear_and_cosine_are_the_one_anneal_shape() -> None:
    for t in (0, 3, 7.5, 10, 14):
        assert S.linear(t, 10, 0.2) == S.anneal(t, 10, 1.0, 0.2, "linear")
        assert S.cosine(t, 10, 0.2) == S.anneal(t, 10, 1.0, 0.2, "cos")
    assert S.anneal(5, 10, 0.1, 0.001, "exp") == pytest.approx(0.01)  # geometric midpoint
    assert S.anneal(5, 10, 0.3, 0.3) == 0.3  # flat phase


def test_combine_runs_phases_in_order_and_holds_the_last() -> None:
    warm = partial(S.anneal, total_steps=4, start=0.0, end=1.0, shape="linear")
    decay = partial(S.cosine, total_steps=10, final_factor=0.1)
    tail = partial(S.anneal, total_steps=6, start=0.1, end=0.1)
    sched = S.combine([4, 10, 6], [warm, decay, tail])
    got = [sched(t) for t in (0, 2, 4, 9, 14, 19, 100)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1, 0.1])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.anneal(1, 0), r"anneal: total_steps=0 must be > 0"),
        (lambda: S.anneal(1, 5, start=-0.5), r"anneal: start=-0.5 and end=0.0 must be >= 0"),
        (lambda: S.anneal(1, 5, 1.0, 0.0, "exp"), r"anneal: shape='exp' needs start=1.0 and end=0.0 > 0"),
        (lambda: S.anneal(1, 5, shape="step"), r"anneal: shape='step' is not one of 'cos', 'linear', 'exp'"),
        (lambda: S.cosine(1, 0), r"cosine: total_steps=0 must be > 0"),
        (lambda: S.combine([5], []), r"combine: 1 lengths for 0 schedules"),
        (lambda: S.combine([5, 0], [S.constant, S.constant]), r"combine: lengths=\[5.0, 0.0\] must all be > "
                                                              r"0"),
        (lambda: S.combine([5], [S.constant])(-1), r"combine: step=-1 must be >= 0"),
    ],
)
def test_anneal_and_combine_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
