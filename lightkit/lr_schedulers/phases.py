"""Any schedule as a chain of phases, from YAML (fastai's ``combine_scheds``): warmup + cosine + flat tail,
two-stage decays, cool-downs.

    lr_scheduler:
      class_path: lightkit.lr_schedulers.Phases
      init_args:
        phases:
          - {duration: 0.05, start: 0.0, end: 1.0, shape: linear}   # warmup over 5 % of training
          - {duration: 0.75, start: 1.0, end: 0.01, shape: cos}     # cosine down to 1 % of the peak
          - {duration: 0.2, start: 0.01, end: 0.01}                 # flat tail
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch.optim import Optimizer

from lightkit.functional import schedules as F
from lightkit.lr_schedulers.base import Duration, FactorScheduler, bind

__all__ = ["Phase", "Phases"]


@dataclass
class Phase:
    """One phase of :class:`Phases`: the factor goes from ``start`` to ``end`` along ``shape``.

    Args:
        duration: length of the phase (:data:`~lightkit.lr_schedulers.base.Duration`: steps, a
            fraction of training or ``"<n>ep"``), > 0.
        start: LR factor (of each group's peak LR) when the phase begins, >= 0.
        end: LR factor when it ends, >= 0; ``start == end`` is a flat phase.
        shape: ``cos``, ``linear`` or ``exp`` (:func:`lightkit.functional.schedules.anneal`).
    """

    duration: Duration
    start: float = 1.0
    end: float = 1.0
    shape: F.Shape = "cos"


class Phases(FactorScheduler):
    """Phases run one after another, each from its ``start`` to its ``end`` factor
    (:func:`lightkit.functional.schedules.combine`, as fastai's ``combine_scheds``).

    The last phase holds its ``end`` factor if training runs past the phases. Durations may add up to
    less than the run; more than the run raises, as a phase that never starts is a config mistake.

    Args:
        optimizer: the wrapped optimizer.
        phases: the phases in order, at least one (:class:`Phase`, or dicts with its keys).
        **tail: ``warmup``, ``warmup_start``, ``interval``, ``total_steps``, ``steps_per_epoch``; see
            :class:`~lightkit.lr_schedulers.base.FactorScheduler` (a ``warmup`` comes before the phases).

    Raises:
        ValueError: no phase, a phase of length 0, bad factors or shape, or phases longer than the run.
        TypeError: a phase that is neither a :class:`Phase` nor a dict of its keys.
    """

    def __init__(self, optimizer: Optimizer, phases: list[Phase], **tail: Any) -> None:
        if not phases:
            raise ValueError("Phases: phases is empty; give at least one {duration, start, end, shape}.")
        # Kept as plain dicts: state_dict must hold plain values only (torch.load(weights_only=True)).
        self.phases = [_phase_dict(i, p) for i, p in enumerate(phases)]
        super().__init__(optimizer, **tail)

    def schedule(self) -> F.Schedule:
        lengths = [self.units(p["duration"], f"phases[{i}].duration") for i, p in enumerate(self.phases)]
        for i, length in enumerate(lengths):
            if length <= 0:
                raise ValueError(f"Phases: phases[{i}].duration={self.phases[i]['duration']!r} is empty; "
                                 f"give every phase a positive duration.")
        if self.total_steps is not None and sum(lengths) > self.horizon("phases") + 1e-9:
            raise ValueError(f"Phases: the phases last {sum(lengths):g} units but the run has "
                             f"{self.horizon('phases'):g} after the warmup; shorten them.")
        fns = [bind(F.anneal, total_steps=length, start=p["start"], end=p["end"], shape=p["shape"])
               for length, p in zip(lengths, self.phases, strict=True)]
        for i, fn in enumerate(fns):  # validate every phase now, not when training reaches it
            try:
                fn(0.0)
            except ValueError as exc:
                raise ValueError(f"Phases: phases[{i}]: {exc}") from None
        return F.combine(lengths, fns)


def _phase_dict(index: int, phase: Phase | dict[str, Any]) -> dict[str, Any]:
    if isinstance(phase, Phase):
        return asdict(phase)
    if isinstance(phase, dict):
        try:
            return asdict(Phase(**phase))
        except TypeError:
            raise TypeError(f"Phases: phases[{index}]={phase!r} has unknown keys; use duration, start, end, "
                            f"shape.") from None
    raise TypeError(f"Phases: phases[{index}]={phase!r} is not a Phase or a dict of duration, start, end, "
                    "shape.")
