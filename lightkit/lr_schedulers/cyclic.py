"""Cycles and restarts: SGDR (cosine with warm restarts), cyclical LR (CLR) and one-cycle.

Each takes the shared tail (``warmup`` ... ``steps_per_epoch``) from
:class:`~lightkit.lr_schedulers.base.FactorScheduler`; :class:`Cyclic` and :class:`OneCycle` are
per-step only.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from lightkit.functional import schedules as F
from lightkit.lr_schedulers.base import Duration, FactorScheduler, bind

__all__ = ["SGDR", "Cyclic", "OneCycle"]


class SGDR(FactorScheduler):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Args:
        optimizer: the wrapped optimizer.
        period: length of the first cycle (:data:`Duration`, e.g. ``"10ep"``).
        period_mult: growth of the cycle length per restart, >= 1.
        peak_decay: multiplier of the peak per restart, in (0, 1].
        final_factor: LR at the end of each cycle as a fraction of the peak, in [0, 1).
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        period: Duration,
        period_mult: float = 1.0,
        peak_decay: float = 1.0,
        final_factor: float = 0.0,
        **tail: Any,
    ) -> None:
        self.period, self.period_mult, self.peak_decay = period, period_mult, peak_decay
        self.final_factor = final_factor
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        return bind(
            F.sgdr, period=self.units(self.period, "period"), period_mult=self.period_mult,
            peak_decay=self.peak_decay, final_factor=self.final_factor,
        )


class Cyclic(FactorScheduler):
    """Cyclical LR between ``lr / div_factor`` and ``lr`` (Smith 2017, https://arxiv.org/abs/1506.01186).

    The optimizer's LR is the top of the cycle (Smith's ``max_lr``); the bottom is ``lr / div_factor``.
    Per-step only.

    Args:
        optimizer: the wrapped optimizer.
        step_size: half a cycle (:data:`Duration`; Smith: 2 to 10 epochs, e.g. ``"4ep"``).
        div_factor: top / bottom LR, > 1 (Smith: 3 to 4).
        mode: ``triangular``, ``triangular2`` (amplitude halves each cycle) or ``exp_range``.
        gamma: ``exp_range`` amplitude decay per step, in (0, 1].
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    per_step_only = True

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: Duration,
        div_factor: float = 4.0,
        mode: F.CyclicMode = "triangular",
        gamma: float = 1.0,
        **tail: Any,
    ) -> None:
        self.step_size, self.div_factor, self.mode, self.gamma = step_size, div_factor, mode, gamma
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        return bind(
            F.cyclic, step_size=self.units(self.step_size, "step_size"), div_factor=self.div_factor,
            mode=self.mode, gamma=self.gamma,
        )


class OneCycle(FactorScheduler):
    """One-cycle LR with inverse momentum cycling (Smith & Topin 2017, https://arxiv.org/abs/1708.07120).

    Matches torch's ``OneCycleLR`` with ``max_lr`` = each group's LR, over the whole run (after the
    optional ``warmup``). With ``cycle_momentum`` the scheduler sets ``momentum`` (SGD, RMSprop) or
    ``betas[0]`` (Adam, AdamW) of every group: ``max_momentum`` -> ``base_momentum`` -> ``max_momentum``.
    Per-step only.

    Args:
        optimizer: the wrapped optimizer.
        pct_start: fraction of the cycle spent raising the LR, in (0, 1).
        div_factor: peak / initial LR, >= 1.
        final_div_factor: initial / final LR, >= 1.
        anneal: ``cos`` or ``linear`` phases.
        cycle_momentum: cycle momentum / beta1 inversely to the LR.
        base_momentum: momentum at the LR peak, in [0, 1).
        max_momentum: momentum at the start and the end, in [base_momentum, 1).
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.

    Raises:
        ValueError: ``cycle_momentum`` with an optimizer that has neither ``momentum`` nor ``betas``.
    """

    per_step_only = True

    def __init__(
        self,
        optimizer: Optimizer,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: F.Anneal = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        **tail: Any,
    ) -> None:
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.anneal, self.cycle_momentum = anneal, cycle_momentum
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        if cycle_momentum and not all("momentum" in g or "betas" in g for g in optimizer.param_groups):
            raise ValueError(
                f"OneCycle: cycle_momentum=True but {type(optimizer).__name__} has neither 'momentum' nor "
                f"'betas'; use SGD, RMSprop, Adam or AdamW, or set cycle_momentum: false."
            )
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        return bind(
            F.one_cycle, total_steps=self.horizon("one cycle"), pct_start=self.pct_start,
            div_factor=self.div_factor, final_div_factor=self.final_div_factor, anneal=self.anneal,
        )

    def momentum_schedule(self) -> F.Schedule | None:
        if not self.cycle_momentum:
            return None
        return bind(
            F.one_cycle_momentum, total_steps=self.horizon("one cycle"), pct_start=self.pct_start,
            base_momentum=self.base_momentum, max_momentum=self.max_momentum, anneal=self.anneal,
        )
