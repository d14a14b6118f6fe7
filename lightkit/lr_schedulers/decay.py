"""Decays: constant, to a final factor (linear, cosine), inverse square root, exponential, step, multistep.

Every class scales each parameter group's own LR by a factor of the step
(:mod:`lightkit.functional.schedules`) and takes the shared tail (``warmup`` ... ``steps_per_epoch``) from
:class:`~lightkit.lr_schedulers.base.FactorScheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch.optim import Optimizer

from lightkit.functional import schedules as F
from lightkit.lr_schedulers.base import Duration, FactorScheduler, bind

__all__ = [
    "Constant",
    "Cosine",
    "DecayToFinal",
    "Exponential",
    "InverseSqrt",
    "Linear",
    "MultiStep",
    "StepDecay",
]


class Constant(FactorScheduler):
    """Constant LR, optionally after a linear warmup (Goyal et al. 2017, https://arxiv.org/abs/1706.02677).

    Args: as :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    def schedule(self) -> F.Schedule:
        return F.constant


class DecayToFinal(FactorScheduler):
    """Decay from the peak LR to ``final_factor`` of it at the end of training, along the subclass's
    ``decay``.

    The one shape behind :class:`Linear` and :class:`Cosine` (:func:`lightkit.functional.schedules.anneal`
    from 1 to ``final_factor``); a new path is a subclass naming its function.

    Args:
        optimizer: the wrapped optimizer.
        final_factor: LR at the end as a fraction of the peak, in [0, 1).
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    decay: ClassVar[Callable[..., float]]
    """``decay(step, total_steps, final_factor)``: the factor's path."""

    def __init__(self, optimizer: Optimizer, final_factor: float = 0.0, **tail: Any) -> None:
        self.final_factor = final_factor
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        decay = type(self).decay
        horizon = self.horizon(f"{decay.__name__} decay")
        return bind(decay, total_steps=horizon, final_factor=self.final_factor)


class Linear(DecayToFinal):
    """Linear decay to ``final_factor`` at the end of training; :func:`lightkit.functional.schedules.linear`.

    Args: as :class:`DecayToFinal`.
    """

    decay = staticmethod(F.linear)


class Cosine(DecayToFinal):
    """Cosine decay to ``final_factor`` at the end of training (Loshchilov & Hutter 2017,
    https://arxiv.org/abs/1608.03983).

    Args: as :class:`DecayToFinal`.
    """

    decay = staticmethod(F.cosine)


class InverseSqrt(FactorScheduler):
    """Inverse square-root decay (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

    Args:
        optimizer: the wrapped optimizer.
        timescale: time over which the LR falls to ``1/sqrt(2)`` of the peak (:data:`Duration`);
            ``None``: the warmup length, which gives the Transformer's ``sqrt(warmup / t)``.
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.

    Raises:
        ValueError: neither ``timescale`` nor ``warmup`` given.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        timescale: Duration | None = None,
        **tail: Any,
    ) -> None:
        self.timescale = timescale
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        if self.timescale is None:
            if self.warmup_units <= 0:
                raise ValueError("InverseSqrt: timescale=None uses the warmup length, but warmup=0; set one "
                                 "of them.")
            return bind(F.inverse_sqrt, timescale=self.warmup_units)
        return bind(F.inverse_sqrt, timescale=self.units(self.timescale, "timescale"))


class Exponential(FactorScheduler):
    """Exponential decay by ``gamma`` per ``every``, applied smoothly;
    :func:`lightkit.functional.schedules.exponential`.

    Args:
        optimizer: the wrapped optimizer.
        gamma: multiplier per ``every``, in (0, 1].
        every: time over which the LR is multiplied by ``gamma`` (:data:`Duration`, e.g. ``"1ep"``).
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        gamma: float,
        every: Duration = 1,
        **tail: Any,
    ) -> None:
        self.gamma, self.every = gamma, every
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        return bind(F.exponential, gamma=self.gamma, every=self.units(self.every, "every"))


class StepDecay(FactorScheduler):
    """Multiply the LR by ``gamma`` every ``step_size``; :func:`lightkit.functional.schedules.step_decay`.

    Args:
        optimizer: the wrapped optimizer.
        step_size: time between decays (:data:`Duration`, e.g. ``"30ep"``).
        gamma: multiplier per decay, in (0, 1].
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: Duration,
        gamma: float = 0.1,
        **tail: Any,
    ) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        return bind(F.step_decay, step_size=self.units(self.step_size, "step_size"), gamma=self.gamma)


class MultiStep(FactorScheduler):
    """Multiply the LR by ``gamma`` at each milestone; :func:`lightkit.functional.schedules.multistep`.

    Args:
        optimizer: the wrapped optimizer.
        milestones: increasing times of the decays (:data:`Duration` each, e.g. ``[0.5, 0.75]``),
            counted from the end of the warmup.
        gamma: multiplier per milestone, in (0, 1].
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[Duration],
        gamma: float = 0.1,
        **tail: Any,
    ) -> None:
        self.milestones, self.gamma = list(milestones), gamma
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        marks = [self.units(m, f"milestones[{i}]") for i, m in enumerate(self.milestones)]
        return bind(F.multistep, milestones=tuple(marks), gamma=self.gamma)
