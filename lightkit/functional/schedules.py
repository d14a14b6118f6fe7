"""Learning-rate schedules as pure functions of the step count: ``factor = f(step, ...)``.

Every function returns a **multiplier of the parameter group's own LR** (the LR the optimizer was built
with, torch's ``initial_lr``), so one schedule drives discriminative LRs without changing their ratios.
The group's LR is always the **peak** LR: decays start at 1, warmup ramps up to the schedule's value at
its start, cyclical LR oscillates between ``1 / div_factor`` and 1 and one-cycle climbs from
``1 / div_factor`` to 1. (Smith's CLR is written with an absolute ``base_lr`` / ``max_lr`` pair; here
``max_lr`` is the group LR and ``base_lr = max_lr / div_factor``, the same ratio one-cycle uses, so an LR
from the range test is used unchanged by every schedule and per-group ratios survive.)

``step`` counts optimizer steps from 0 (or epochs, when a caller steps per epoch; fractional values are
fine). All durations are in the same unit as ``step``. Past its horizon a schedule holds its final
value. Bind the hyperparameters with :func:`functools.partial` to get a one-argument schedule and
compose it with :func:`with_warmup`::

    sched = with_warmup(partial(cosine, total_steps=900), warmup_steps=100)
    lrs = [base_lr * sched(t) for t in range(1000)]

Any phases compose with :func:`combine` (fastai's ``combine_scheds``): warmup, cosine, flat tail::

    sched = combine([100, 700, 200], [partial(anneal, total_steps=100, start=0.0, end=1.0, shape="linear"),
                                      partial(cosine, total_steps=700, final_factor=0.01),
                                      partial(anneal, total_steps=200, start=0.01, end=0.01)])

No Lightning import; :mod:`lightkit.lr_schedulers` wraps these as torch ``LRScheduler`` classes.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Anneal",
    "Combined",
    "CyclicMode",
    "Schedule",
    "Shape",
    "Warmup",
    "anneal",
    "combine",
    "constant",
    "cosine",
    "cyclic",
    "exponential",
    "inverse_sqrt",
    "linear",
    "multistep",
    "one_cycle",
    "one_cycle_momentum",
    "sgdr",
    "step_decay",
    "with_warmup",
]

Schedule = Callable[[float], float]
"""A one-argument schedule: step (>= 0) -> LR multiplier."""
Anneal = Literal["cos", "linear"]
Shape = Literal["cos", "linear", "exp"]
"""The path of :func:`anneal` between its two values (fastai's ``SchedCos``, ``SchedLin``, ``SchedExp``)."""
CyclicMode = Literal["triangular", "triangular2", "exp_range"]


# -- validation helpers -------------------------------------------------------------------------
def _check_step(fn: str, step: float) -> None:
    if not step >= 0:  # also rejects NaN
        raise ValueError(f"{fn}: step={step} must be >= 0; steps count from 0.")


def _check_positive(fn: str, name: str, value: float, unit: str = "steps") -> None:
    if not value > 0:
        raise ValueError(f"{fn}: {name}={value} must be > 0 ({unit}).")


def _check_unit_interval(fn: str, name: str, value: float, *, closed_right: bool = False) -> None:
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        bounds = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{fn}: {name}={value} must be in {bounds} (a fraction of the peak LR).")


def _check_gamma(fn: str, gamma: float) -> None:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"{fn}: gamma={gamma} must be in (0, 1]; it multiplies the LR at each decay.")


def _anneal(start: float, end: float, pct: float, anneal: Anneal) -> float:
    if anneal == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
    return start + (end - start) * pct


def _check_anneal(fn: str, anneal: str) -> None:
    if anneal not in ("cos", "linear"):
        raise ValueError(f"{fn}: anneal={anneal!r} is not one of 'cos', 'linear'.")


# -- simple decays ------------------------------------------------------------------------------
def constant(step: float) -> float:
    """Constant LR: always 1 (the group's LR). Useful under :func:`with_warmup`.

    Args:
        step: optimizer steps done, >= 0.
    """
    _check_step("constant", step)
    return 1.0


def step_decay(step: float, step_size: float, gamma: float = 0.1) -> float:
    """Step decay: multiply by ``gamma`` every ``step_size`` steps, ``gamma ** floor(step / step_size)``.

    Args:
        step: optimizer steps done, >= 0.
        step_size: steps between two decays, > 0 (e.g. 30 epochs' worth of steps).
        gamma: multiplier per decay, in (0, 1].

    Raises:
        ValueError: ``step < 0``, ``step_size <= 0`` or ``gamma`` outside (0, 1].
    """
    _check_step("step_decay", step)
    _check_positive("step_decay", "step_size", step_size)
    _check_gamma("step_decay", gamma)
    return gamma ** math.floor(step / step_size)


def multistep(step: float, milestones: Sequence[float], gamma: float = 0.1) -> float:
    """Multistep decay: multiply by ``gamma`` at each milestone (He et al. 2016,
    https://arxiv.org/abs/1512.03385).

    Args:
        step: optimizer steps done, >= 0.
        milestones: strictly increasing steps at which the LR is multiplied by ``gamma``.
        gamma: multiplier per milestone, in (0, 1].

    Raises:
        ValueError: empty, negative or unsorted ``milestones``; ``gamma`` outside (0, 1].
    """
    _check_step("multistep", step)
    _check_gamma("multistep", gamma)
    if (
        not milestones
        or milestones[0] < 0
        or any(b <= a for a, b in zip(milestones[:-1], milestones[1:], strict=True))
    ):
        raise ValueError(f"multistep: milestones={list(milestones)} must be non-empty, >= 0 and strictly "
                         "increasing.")
    return gamma ** bisect_right(list(milestones), step)


def anneal(
    step: float, total_steps: float, start: float = 1.0, end: float = 0.0, shape: Shape = "cos"
) -> float:
    """The one decay shape: from ``start`` at step 0 to ``end`` at ``total_steps``, then hold ``end``.

    ``shape`` is the path: ``cos`` (half cosine, Loshchilov & Hutter 2017), ``linear`` or ``exp``
    (geometric, both values > 0). ``start == end`` is a flat phase. :func:`linear` and :func:`cosine`
    are this function from 1 to ``final_factor``; :func:`combine` chains any such phases.

    Args:
        step: optimizer steps done, >= 0.
        total_steps: steps of the phase, > 0.
        start: factor at step 0, >= 0.
        end: factor from ``total_steps`` on, >= 0.
        shape: ``cos``, ``linear`` or ``exp``.

    Raises:
        ValueError: bad ``total_steps``, a negative value, an unknown ``shape``, or ``exp`` with a value of 0.
    """
    return _path("anneal", step, total_steps, start, end, shape)


def _path(fn: str, step: float, total_steps: float, start: float, end: float, shape: str) -> float:
    """:func:`anneal`, with errors naming the public function ``fn`` that was called."""
    _check_step(fn, step)
    _check_positive(fn, "total_steps", total_steps)
    if not (start >= 0.0 and end >= 0.0):
        raise ValueError(f"{fn}: start={start} and end={end} must be >= 0 (LR multipliers).")
    pct = min(step / total_steps, 1.0)
    if shape == "exp":
        if start == 0.0 or end == 0.0:
            raise ValueError(f"{fn}: shape='exp' needs start={start} and end={end} > 0; use 'linear' or "
                             "'cos' to reach 0.")
        return start * (end / start) ** pct
    if shape not in ("cos", "linear"):
        raise ValueError(f"{fn}: shape={shape!r} is not one of 'cos', 'linear', 'exp'.")
    return _anneal(start, end, pct, shape)  # type: ignore[arg-type]


def linear(step: float, total_steps: float, final_factor: float = 0.0) -> float:
    """Linear decay ``a0 (1 - t / T)`` from 1 to ``final_factor`` over ``total_steps``: :func:`anneal` with
    ``shape="linear"``.

    Args:
        step: optimizer steps done, >= 0.
        total_steps: steps of the decay T, > 0; the factor holds ``final_factor`` afterwards.
        final_factor: factor reached at T, in [0, 1).

    Raises:
        ValueError: bad ``total_steps`` or ``final_factor``.
    """
    _check_unit_interval("linear", "final_factor", final_factor)
    return _path("linear", step, total_steps, 1.0, final_factor, "linear")


def inverse_sqrt(step: float, timescale: float) -> float:
    """Inverse square root decay ``1 / sqrt(1 + t / timescale)`` (Vaswani et al. 2017,
    https://arxiv.org/abs/1706.03762).

    Behaves as ``a0 / sqrt(t)`` for ``t >> timescale`` but is 1 at ``t = 0`` instead of infinite. After a
    warmup of W steps with ``timescale = W`` this is exactly the Transformer's ``sqrt(W / t)``.

    Args:
        step: optimizer steps done, >= 0.
        timescale: steps over which the factor falls to ``1 / sqrt(2)``, > 0.

    Raises:
        ValueError: ``timescale <= 0``.
    """
    _check_step("inverse_sqrt", step)
    _check_positive("inverse_sqrt", "timescale", timescale)
    return 1.0 / math.sqrt(1.0 + step / timescale)


def cosine(step: float, total_steps: float, final_factor: float = 0.0) -> float:
    """Cosine decay ``a0 / 2 (1 + cos(pi t / T))`` (Loshchilov & Hutter 2017,
    https://arxiv.org/abs/1608.03983).

    :func:`anneal` from 1 to ``final_factor`` with ``shape="cos"``.

    Args:
        step: optimizer steps done, >= 0.
        total_steps: steps of the decay T, > 0; the factor holds ``final_factor`` afterwards.
        final_factor: factor reached at T (torch's ``eta_min / base_lr``), in [0, 1).

    Raises:
        ValueError: bad ``total_steps`` or ``final_factor``.
    """
    _check_unit_interval("cosine", "final_factor", final_factor)
    return _path("cosine", step, total_steps, 1.0, final_factor, "cos")


def exponential(step: float, gamma: float, every: float = 1.0) -> float:
    """Exponential decay ``gamma ** (t / every)``: a factor ``gamma`` per ``every`` steps, applied smoothly.

    Args:
        step: optimizer steps done, >= 0.
        gamma: multiplier per ``every`` steps, in (0, 1].
        every: steps over which the LR is multiplied by ``gamma``, > 0 (e.g. one epoch's worth).

    Raises:
        ValueError: ``gamma`` outside (0, 1] or ``every <= 0``.
    """
    _check_step("exponential", step)
    _check_gamma("exponential", gamma)
    _check_positive("exponential", "every", every)
    return gamma ** (step / every)


# -- restarts and cycles ------------------------------------------------------------------------
def sgdr(
    step: float, period: float, period_mult: float = 1.0, peak_decay: float = 1.0, final_factor: float = 0.0
) -> float:
    """Cosine annealing with warm restarts, SGDR (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Cycle ``i`` lasts ``period * period_mult ** i`` steps and anneals by a half cosine from
    ``peak_decay ** i`` down to ``final_factor``, then restarts (a decayed peak below ``final_factor``
    gives a flat cycle at ``final_factor``).

    Args:
        step: optimizer steps done, >= 0.
        period: steps of the first cycle (the paper's ``T_0``), > 0.
        period_mult: growth of the cycle length per restart (``T_mult``), >= 1.
        peak_decay: multiplier of the peak per restart, in (0, 1] (1: every cycle restarts at 1).
        final_factor: factor at the end of every cycle (``eta_min / base_lr``), in [0, 1).

    Raises:
        ValueError: a hyperparameter outside its range.
    """
    _check_step("sgdr", step)
    _check_positive("sgdr", "period", period)
    if not period_mult >= 1.0:
        raise ValueError(f"sgdr: period_mult={period_mult} must be >= 1 (1: equal cycles, 2: each cycle "
                         "twice as long).")
    if not 0.0 < peak_decay <= 1.0:
        raise ValueError(f"sgdr: peak_decay={peak_decay} must be in (0, 1] (1: no decay of the peak).")
    _check_unit_interval("sgdr", "final_factor", final_factor)
    if period_mult == 1.0:
        cycle = math.floor(step / period)
        t_cur, t_i = step - cycle * period, period
    else:
        # Walk the cycles instead of the closed-form log: log(8, 2) == 2.9999999999999996 would put
        # an exact restart step in the previous cycle. Cycles grow geometrically, so this is short.
        cycle, t_cur, t_i = 0, step, period
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= period_mult
            cycle += 1
    # Once the decayed peak falls below the floor, cycles are flat at the floor.
    peak = max(peak_decay**cycle, final_factor)
    return _anneal(peak, final_factor, t_cur / t_i, "cos")


def cyclic(
    step: float,
    step_size: float,
    div_factor: float = 4.0,
    mode: CyclicMode = "triangular",
    gamma: float = 1.0,
) -> float:
    """Cyclical learning rate, CLR (Smith 2017, https://arxiv.org/abs/1506.01186).

    A triangle between ``1 / div_factor`` (Smith's ``base_lr / max_lr``) and 1, starting at the bottom,
    reaching 1 after ``step_size`` steps and the bottom again after ``2 * step_size``::

        cycle = floor(1 + t / (2 s));  x = |t / s - 2 cycle + 1|
        factor = 1 / div + (1 - 1 / div) * max(0, 1 - x) * scale

    with ``scale`` 1 (``triangular``), ``1 / 2 ** (cycle - 1)`` (``triangular2``: the amplitude halves
    every cycle) or ``gamma ** t`` (``exp_range``).

    Args:
        step: optimizer steps done, >= 0.
        step_size: steps of half a cycle, > 0 (Smith: 2 to 10 epochs' worth).
        div_factor: peak / bottom LR ratio, > 1 (Smith: 3 to 4).
        mode: amplitude policy, ``triangular``, ``triangular2`` or ``exp_range``.
        gamma: per-step amplitude decay of ``exp_range``, in (0, 1] (e.g. 0.99994).

    Raises:
        ValueError: a hyperparameter outside its range or an unknown ``mode``.
    """
    _check_step("cyclic", step)
    _check_positive("cyclic", "step_size", step_size)
    if not div_factor > 1.0:
        raise ValueError(f"cyclic: div_factor={div_factor} must be > 1 (peak / bottom LR; Smith uses 3 to "
                         "4).")
    _check_gamma("cyclic", gamma)
    cycle = math.floor(1.0 + step / (2.0 * step_size))
    x = abs(step / step_size - 2.0 * cycle + 1.0)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1.0 / 2.0 ** (cycle - 1)
    elif mode == "exp_range":
        scale = gamma**step
    else:
        raise ValueError(f"cyclic: mode={mode!r} is not one of 'triangular', 'triangular2', 'exp_range'.")
    low = 1.0 / div_factor
    return low + (1.0 - low) * max(0.0, 1.0 - x) * scale


def _one_cycle_phases(fn: str, step: float, total_steps: float, pct_start: float) -> tuple[bool, float]:
    """``(in_warmup_phase, pct_of_phase)`` with torch's ``OneCycleLR`` phase boundaries."""
    _check_step(fn, step)
    _check_positive(fn, "total_steps", total_steps)
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"{fn}: pct_start={pct_start} must be in (0, 1) (fraction of the cycle spent "
                         "rising).")
    # As torch: the rise ends at step pct_start * T - 1, the fall at T - 1 (the last step taken).
    up_end, down_end = pct_start * total_steps - 1.0, total_steps - 1.0
    if up_end <= 0.0:
        raise ValueError(
            f"{fn}: pct_start * total_steps = {pct_start * total_steps:g} leaves no rising phase; "
            f"it must exceed 1 step: raise pct_start or total_steps."
        )
    if step <= up_end:
        return True, step / up_end
    return False, min((step - up_end) / (down_end - up_end), 1.0)


def one_cycle(
    step: float,
    total_steps: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: Anneal = "cos",
) -> float:
    """One-cycle policy (Smith & Topin 2017, https://arxiv.org/abs/1708.07120), as torch's ``OneCycleLR``.

    Rises from ``1 / div_factor`` to 1 over the first ``pct_start`` of the cycle, then falls to
    ``1 / (div_factor * final_div_factor)`` at step ``total_steps - 1``; the group LR is the peak.

    Args:
        step: optimizer steps done, >= 0.
        total_steps: steps of the whole cycle, > 0.
        pct_start: fraction of the cycle spent rising, in (0, 1).
        div_factor: peak / initial LR, >= 1.
        final_div_factor: initial / final LR, >= 1.
        anneal: shape of both phases, ``cos`` or ``linear``.

    Raises:
        ValueError: a hyperparameter outside its range.
    """
    if not div_factor >= 1.0 or not final_div_factor >= 1.0:
        raise ValueError(
            f"one_cycle: div_factor={div_factor} and final_div_factor={final_div_factor} must be >= 1 "
            f"(ratios peak / initial and initial / final LR)."
        )
    _check_anneal("one_cycle", anneal)
    rising, pct = _one_cycle_phases("one_cycle", step, total_steps, pct_start)
    initial = 1.0 / div_factor
    if rising:
        return _anneal(initial, 1.0, pct, anneal)
    return _anneal(1.0, initial / final_div_factor, pct, anneal)


def one_cycle_momentum(
    step: float,
    total_steps: float,
    pct_start: float = 0.3,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    anneal: Anneal = "cos",
) -> float:
    """Inverse momentum cycle of one-cycle (Smith & Topin 2017, https://arxiv.org/abs/1708.07120).

    Returns the **absolute** momentum (SGD ``momentum`` or Adam ``beta1``), not a multiplier: it falls
    from ``max_momentum`` to ``base_momentum`` while the LR rises and climbs back while it falls.

    Args:
        step: optimizer steps done, >= 0.
        total_steps: steps of the whole cycle, > 0 (as in :func:`one_cycle`).
        pct_start: fraction of the cycle spent rising, in (0, 1) (as in :func:`one_cycle`).
        base_momentum: momentum at the LR peak, in [0, 1).
        max_momentum: momentum at both ends, in [base_momentum, 1).
        anneal: shape of both phases, ``cos`` or ``linear``.

    Raises:
        ValueError: a hyperparameter outside its range.
    """
    if not 0.0 <= base_momentum <= max_momentum < 1.0:
        raise ValueError(
            f"one_cycle_momentum: need 0 <= base_momentum ({base_momentum}) <= max_momentum ({max_momentum}) "
            "< 1; "
            f"the usual pair is 0.85 / 0.95."
        )
    _check_anneal("one_cycle_momentum", anneal)
    rising, pct = _one_cycle_phases("one_cycle_momentum", step, total_steps, pct_start)
    if rising:
        return _anneal(max_momentum, base_momentum, pct, anneal)
    return _anneal(base_momentum, max_momentum, pct, anneal)


# -- composition --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Warmup:
    """A linear warmup prefix before any schedule; build it with :func:`with_warmup`.

    Attributes:
        fn: the schedule that follows, called with ``step - warmup_steps``.
        warmup_steps: length of the ramp in steps, >= 0.
        start_factor: value at step 0 as a fraction of ``fn(0)``, in [0, 1].
    """

    fn: Schedule
    warmup_steps: float
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        if not self.warmup_steps >= 0:
            raise ValueError(f"with_warmup: warmup_steps={self.warmup_steps} must be >= 0 (steps; 0: no "
                             "warmup).")
        _check_unit_interval("with_warmup", "start_factor", self.start_factor, closed_right=True)

    def __call__(self, step: float) -> float:
        _check_step("with_warmup", step)
        if step >= self.warmup_steps:
            return self.fn(step - self.warmup_steps)
        ramp = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return self.fn(0.0) * ramp


def with_warmup(fn: Schedule, warmup_steps: float, start_factor: float = 0.0) -> Schedule:
    """Prefix ``fn`` with a linear warmup (Goyal et al. 2017, https://arxiv.org/abs/1706.02677).

    For ``t < W`` the factor ramps linearly from ``start_factor * fn(0)`` to ``fn(0)``; afterwards it is
    ``fn(t - W)``, so ``fn`` starts where the ramp ends and its horizon should be ``total - W``
    (``with_warmup(partial(cosine, total_steps=T - W), W)``). The result is continuous at W.
    ``start_factor=1`` holds ``fn(0)`` during the warmup (used for one-cycle's momentum).

    Args:
        fn: a one-argument schedule (bind hyperparameters with :func:`functools.partial`).
        warmup_steps: length W of the ramp in steps, >= 0 (0 returns a schedule equal to ``fn``).
        start_factor: factor at step 0 relative to ``fn(0)``, in [0, 1].

    Raises:
        ValueError: negative ``warmup_steps`` or ``start_factor`` outside [0, 1].
    """
    return Warmup(fn, warmup_steps, start_factor)


@dataclass(frozen=True)
class Combined:
    """Schedules run one after another (fastai's ``combine_scheds``); build it with :func:`combine`.

    Attributes:
        lengths: steps of each phase, > 0 each.
        fns: the phases' schedules, each called with the steps since its phase began.
    """

    lengths: tuple[float, ...]
    fns: tuple[Schedule, ...]

    def __post_init__(self) -> None:
        if not self.fns or len(self.lengths) != len(self.fns):
            raise ValueError(f"combine: {len(self.lengths)} lengths for {len(self.fns)} schedules; give one "
                             "length "
                             f"per schedule, at least one.")
        if not all(length > 0 for length in self.lengths):
            raise ValueError(f"combine: lengths={list(self.lengths)} must all be > 0 (steps).")

    def __call__(self, step: float) -> float:
        _check_step("combine", step)
        start = 0.0
        for length, fn in zip(self.lengths[:-1], self.fns[:-1], strict=True):
            if step < start + length:
                return fn(step - start)
            start += length
        return self.fns[-1](step - start)  # the last phase also covers everything after it


def combine(lengths: Sequence[float], fns: Sequence[Schedule]) -> Schedule:
    """Run ``fns[0]`` for ``lengths[0]`` steps, then ``fns[1]`` for ``lengths[1]`` steps, ... (fastai's
    ``combine_scheds``).

    Each schedule sees the steps since its own phase began, so phases written with :func:`anneal`
    (``start`` -> ``end`` over the phase) chain into any shape: warmup + cosine + flat tail, a
    two-stage decay, a cool-down. The last schedule also runs past the end of its phase (it holds its
    final value when it is an :func:`anneal`). Continuity between phases is the caller's choice.

    Args:
        lengths: steps of each phase, > 0 each.
        fns: one one-argument schedule per phase.

    Raises:
        ValueError: lengths and schedules of different counts, none, or a length <= 0.
    """
    return Combined(tuple(float(length) for length in lengths), tuple(fns))
