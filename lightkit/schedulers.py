"""Torch ``LRScheduler`` classes over :mod:`lightkit.functional.schedules`, selectable from YAML.

Each class multiplies **every parameter group's own LR** by the same factor, so discriminative LRs keep
their ratios, and steps **per optimizer step** by default (``interval = "step"``, which
``ImageClassifier`` passes on to Lightning)::

    model:
      optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentum: 0.9, nesterov: true}}
      lr_scheduler:
        class_path: lightkit.schedulers.OneCycle
        init_args: {pct_start: 0.25, warmup: 0}

**Durations** (``warmup``, ``step_size``, ``period``, ``milestones``...) accept

* an ``int``: steps (epochs when ``interval: epoch``),
* a ``float`` in (0, 1]: a fraction of training (``warmup: 0.05``), needs ``total_steps``,
* a string ``"<n>ep"``: epochs (``step_size: "2ep"``), needs ``steps_per_epoch``.

``total_steps`` (optimizer steps of the whole run) and ``steps_per_epoch`` are filled in by
``ImageClassifier`` from the trainer; give them yourself outside Lightning.

Per-step policies (:class:`OneCycle`, :class:`Cyclic` and any ``warmup``) **refuse**
``interval: epoch`` with a ``ValueError``: stepped once per epoch they would run a whole cycle or ramp
over ``total_steps`` epochs, the classic OneCycle mistake.

Resume is exact: ``state_dict`` holds only plain numbers (safe for ``torch.load(weights_only=True)``),
and ``load_state_dict`` rebuilds the schedule from them and re-applies the current LR and momentum.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightkit.functional import schedules as F

__all__ = [
    "SGDR",
    "Constant",
    "Cosine",
    "Cyclic",
    "Duration",
    "Exponential",
    "FactorScheduler",
    "InverseSqrt",
    "Linear",
    "MultiStep",
    "OneCycle",
    "ReduceOnPlateau",
    "StepDecay",
]

Duration = int | float | str
"""Steps (``int``), a fraction of training (``float`` in (0, 1]) or epochs (``"3ep"``)."""
Interval = Literal["step", "epoch"]

_EPOCHS = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*ep\s*")
# Attributes that are functions rebuilt from the hyperparameters, never saved.
_NOT_STATE = ("optimizer", "_lr_fn", "_momentum_fn")


class FactorScheduler(LRScheduler):
    """Base class: ``lr_i = base_lr_i * schedule(t)`` with an optional linear warmup prefix.

    Subclasses store their hyperparameters as plain attributes, call ``super().__init__`` and implement
    :meth:`schedule`, returning a one-argument function of ``t`` (interval units after the warmup).

    Args:
        optimizer: the wrapped optimizer; each group's ``lr`` is its peak LR.
        warmup: linear warmup length (:data:`Duration`); 0 for none. Needs ``interval: step``.
        warmup_start: LR at step 0 as a fraction of the LR the warmup reaches, in [0, 1].
        interval: ``step`` (default) or ``epoch``: what one ``scheduler.step()`` means.
        total_steps: optimizer steps of the whole run (Lightning's ``estimated_stepping_batches``).
        steps_per_epoch: optimizer steps per epoch.

    Raises:
        ValueError: a bad duration, a missing ``total_steps`` / ``steps_per_epoch`` for the duration
            given, or a per-step policy with ``interval: epoch``.
    """

    per_step_only: ClassVar[bool] = False
    interval: Interval

    def __init__(
        self,
        optimizer: Optimizer,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        name = type(self).__name__
        if interval not in ("step", "epoch"):
            raise ValueError(f"{name}: interval={interval!r} is not one of 'step', 'epoch'.")
        for key, value in (("total_steps", total_steps), ("steps_per_epoch", steps_per_epoch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name}: {key}={value!r} must be a positive int (optimizer steps) or None.")
        if not 0.0 <= warmup_start <= 1.0:
            raise ValueError(f"{name}: warmup_start={warmup_start} must be in [0, 1] (fraction of the LR reached).")
        self.interval = interval
        self.warmup = warmup
        self.warmup_start = warmup_start
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        if interval == "epoch" and self.per_step_only:
            self._refuse_epoch_interval(f"{name}, a per-step policy,")
        self._build()
        if interval == "epoch" and self.warmup_units > 0:
            self._refuse_epoch_interval("a warmup")
        super().__init__(optimizer)

    def _refuse_epoch_interval(self, what: str) -> None:
        # Refused rather than warned: a per-epoch one-cycle or warmup silently wastes the whole run.
        raise ValueError(
            f"{type(self).__name__}: interval='epoch' would advance {what} once per epoch, so its "
            f"shape would be stretched over epochs instead of steps (the classic OneCycle-per-epoch "
            f"mistake). Use interval: step (the default) and give durations in epochs as strings such as '3ep'."
        )

    # -- hooks ---------------------------------------------------------------------------------
    def schedule(self) -> F.Schedule:
        """The schedule after the warmup, a function of interval units since the warmup ended."""
        raise NotImplementedError

    def momentum_schedule(self) -> F.Schedule | None:
        """Absolute momentum / beta1 per interval unit since the warmup ended; ``None``: untouched."""
        return None

    # -- durations -----------------------------------------------------------------------------
    def total_units(self, what: str) -> float:
        """Length of training in interval units (steps, or epochs with ``interval: epoch``)."""
        name = type(self).__name__
        if self.total_steps is None:
            raise ValueError(
                f"{name}: {what} needs total_steps (optimizer steps of the whole run); pass total_steps= "
                f"or build the scheduler through ImageClassifier, which passes the trainer's figure."
            )
        if self.interval == "step":
            return float(self.total_steps)
        return self.total_steps / self._steps_per_epoch(what)

    def horizon(self, what: str) -> float:
        """Interval units left after the warmup: the length of the schedule proper."""
        left = self.total_units(what) - self.warmup_units
        if left <= 0:
            raise ValueError(
                f"{type(self).__name__}: warmup={self.warmup!r} ({self.warmup_units:g} units) leaves no "
                f"training for the {what}; shorten the warmup."
            )
        return left

    def units(self, value: Duration, what: str) -> float:
        """Convert a :data:`Duration` into interval units."""
        name = type(self).__name__
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"{name}: {what}={value!r} must be an int (steps), a float in (0, 1] or '<n>ep'.")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{name}: {what}={value} must be >= 0 steps.")
            return float(value)
        if isinstance(value, float):
            if value == 0.0:
                return 0.0
            if not 0.0 < value <= 1.0:
                raise ValueError(
                    f"{name}: {what}={value} as a float is a fraction of training and must be in (0, 1]; "
                    f"give steps as an int or epochs as a string such as '{value:g}ep'."
                )
            return value * self.total_units(f"{what}={value}")
        match = _EPOCHS.fullmatch(value)
        if match is None:
            raise ValueError(f"{name}: {what}={value!r} is not a duration; use an int (steps), a fraction or '3ep'.")
        epochs = float(match.group(1))
        return epochs if self.interval == "epoch" else epochs * self._steps_per_epoch(f"{what}={value!r}")

    def _steps_per_epoch(self, what: str) -> int:
        if self.steps_per_epoch is None:
            raise ValueError(
                f"{type(self).__name__}: {what} needs steps_per_epoch; pass steps_per_epoch= or build "
                f"the scheduler through ImageClassifier, which passes the trainer's figure."
            )
        return self.steps_per_epoch

    # -- LRScheduler -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.warmup_units = self.units(self.warmup, "warmup")
        self._lr_fn = F.with_warmup(self.schedule(), self.warmup_units, self.warmup_start)
        momentum = self.momentum_schedule()
        self._momentum_fn = None if momentum is None else F.with_warmup(momentum, self.warmup_units, 1.0)
        # Evaluate once so every hyperparameter is validated before the optimizer is touched.
        self._lr_fn(0.0)
        if self._momentum_fn is not None:
            self._momentum_fn(0.0)

    def factor(self, t: float) -> float:
        """The LR multiplier after ``t`` scheduler steps."""
        return self._lr_fn(float(t))

    def get_lr(self) -> list[float | Tensor]:
        if self._momentum_fn is not None:
            self._set_momentum(self._momentum_fn(float(self.last_epoch)))
        factor = self.factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float | Tensor]:
        return self.get_lr()

    def _set_momentum(self, momentum: float) -> None:
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, *tuple(group["betas"])[1:])
            else:
                group["momentum"] = momentum

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and strings only: step counters, base / last LRs and the hyperparameters."""
        return {key: value for key, value in self.__dict__.items() if key not in _NOT_STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state, rebuild the schedule and re-apply the current LR (and momentum)."""
        self.__dict__.update({key: value for key, value in state_dict.items() if key not in _NOT_STATE})
        self._build()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        if self._momentum_fn is not None:
            self._set_momentum(self._momentum_fn(float(self.last_epoch)))


def _bind(fn: Callable[..., float], **kwargs: Any) -> F.Schedule:
    return partial(fn, **kwargs)


class Constant(FactorScheduler):
    """Constant LR, optionally after a linear warmup (Goyal et al. 2017, https://arxiv.org/abs/1706.02677).

    Args: as :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return F.constant


class StepDecay(FactorScheduler):
    """Multiply the LR by ``gamma`` every ``step_size``; :func:`lightkit.functional.schedules.step_decay`.

    Args:
        optimizer: the wrapped optimizer.
        step_size: time between decays (:data:`Duration`, e.g. ``"30ep"``).
        gamma: multiplier per decay, in (0, 1].
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: Duration,
        gamma: float = 0.1,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(F.step_decay, step_size=self.units(self.step_size, "step_size"), gamma=self.gamma)


class MultiStep(FactorScheduler):
    """Multiply the LR by ``gamma`` at each milestone; :func:`lightkit.functional.schedules.multistep`.

    Args:
        optimizer: the wrapped optimizer.
        milestones: increasing times of the decays (:data:`Duration` each, e.g. ``[0.5, 0.75]``),
            counted from the end of the warmup.
        gamma: multiplier per milestone, in (0, 1].
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[Duration],
        gamma: float = 0.1,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.milestones, self.gamma = list(milestones), gamma
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        marks = [self.units(m, f"milestones[{i}]") for i, m in enumerate(self.milestones)]
        return _bind(F.multistep, milestones=tuple(marks), gamma=self.gamma)


class Linear(FactorScheduler):
    """Linear decay to ``final_factor`` at the end of training; :func:`lightkit.functional.schedules.linear`.

    Args:
        optimizer: the wrapped optimizer.
        final_factor: LR at the end as a fraction of the peak, in [0, 1).
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        final_factor: float = 0.0,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.final_factor = final_factor
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(F.linear, total_steps=self.horizon("linear decay"), final_factor=self.final_factor)


class InverseSqrt(FactorScheduler):
    """Inverse square-root decay (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

    Args:
        optimizer: the wrapped optimizer.
        timescale: time over which the LR falls to ``1/sqrt(2)`` of the peak (:data:`Duration`);
            ``None``: the warmup length, which gives the Transformer's ``sqrt(warmup / t)``.
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.

    Raises:
        ValueError: neither ``timescale`` nor ``warmup`` given.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        timescale: Duration | None = None,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.timescale = timescale
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        if self.timescale is None:
            if self.warmup_units <= 0:
                raise ValueError("InverseSqrt: timescale=None uses the warmup length, but warmup=0; set one of them.")
            return _bind(F.inverse_sqrt, timescale=self.warmup_units)
        return _bind(F.inverse_sqrt, timescale=self.units(self.timescale, "timescale"))


class Cosine(FactorScheduler):
    """Cosine decay to ``final_factor`` at the end of training (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Args:
        optimizer: the wrapped optimizer.
        final_factor: LR at the end as a fraction of the peak, in [0, 1).
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        final_factor: float = 0.0,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.final_factor = final_factor
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(F.cosine, total_steps=self.horizon("cosine decay"), final_factor=self.final_factor)


class Exponential(FactorScheduler):
    """Exponential decay by ``gamma`` per ``every``, applied smoothly; :func:`lightkit.functional.schedules.exponential`.

    Args:
        optimizer: the wrapped optimizer.
        gamma: multiplier per ``every``, in (0, 1].
        every: time over which the LR is multiplied by ``gamma`` (:data:`Duration`, e.g. ``"1ep"``).
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        gamma: float,
        every: Duration = 1,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.gamma, self.every = gamma, every
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(F.exponential, gamma=self.gamma, every=self.units(self.every, "every"))


class SGDR(FactorScheduler):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Args:
        optimizer: the wrapped optimizer.
        period: length of the first cycle (:data:`Duration`, e.g. ``"10ep"``).
        period_mult: growth of the cycle length per restart, >= 1.
        peak_decay: multiplier of the peak per restart, in (0, 1].
        final_factor: LR at the end of each cycle as a fraction of the peak, in [0, 1).
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        period: Duration,
        period_mult: float = 1.0,
        peak_decay: float = 1.0,
        final_factor: float = 0.0,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.period, self.period_mult, self.peak_decay = period, period_mult, peak_decay
        self.final_factor = final_factor
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(
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
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.
    """

    per_step_only = True

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: Duration,
        div_factor: float = 4.0,
        mode: F.CyclicMode = "triangular",
        gamma: float = 1.0,
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.step_size, self.div_factor, self.mode, self.gamma = step_size, div_factor, mode, gamma
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(
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
        warmup, warmup_start, interval, total_steps, steps_per_epoch: see :class:`FactorScheduler`.

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
        warmup: Duration = 0,
        warmup_start: float = 0.0,
        interval: Interval = "step",
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self.anneal, self.cycle_momentum = anneal, cycle_momentum
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        if cycle_momentum and not all("momentum" in g or "betas" in g for g in optimizer.param_groups):
            raise ValueError(
                f"OneCycle: cycle_momentum=True but {type(optimizer).__name__} has neither 'momentum' nor "
                f"'betas'; use SGD, RMSprop, Adam or AdamW, or set cycle_momentum: false."
            )
        super().__init__(optimizer, warmup, warmup_start, interval, total_steps, steps_per_epoch)

    def schedule(self) -> F.Schedule:
        return _bind(
            F.one_cycle, total_steps=self.horizon("one cycle"), pct_start=self.pct_start,
            div_factor=self.div_factor, final_div_factor=self.final_div_factor, anneal=self.anneal,
        )

    def momentum_schedule(self) -> F.Schedule | None:
        if not self.cycle_momentum:
            return None
        return _bind(
            F.one_cycle_momentum, total_steps=self.horizon("one cycle"), pct_start=self.pct_start,
            base_momentum=self.base_momentum, max_momentum=self.max_momentum, anneal=self.anneal,
        )


class ReduceOnPlateau(ReduceLROnPlateau):
    """Multiply every group's LR by ``factor`` when ``monitor`` stops improving (torch ``ReduceLROnPlateau``).

    The lecture's "watch the validation error, halve the LR when it stops improving": steps per epoch
    (after validation) on the logged metric named by ``monitor``, which ``ImageClassifier`` hands to
    Lightning.

    Args:
        optimizer: the wrapped optimizer.
        monitor: logged metric to watch, e.g. ``val/loss`` (mode ``min``) or ``val/acc`` (mode ``max``).
        mode: ``min`` or ``max``: whether lower or higher ``monitor`` is better.
        factor: LR multiplier on a plateau, in (0, 1).
        patience: validations without improvement before reducing.
        threshold: smallest change counted as an improvement (relative or absolute, see ``threshold_mode``).
        threshold_mode: ``rel`` or ``abs``.
        cooldown: validations to wait after a reduction before counting again.
        min_lr: lower bound on the LR, one for all groups or one per group.
        eps: reductions smaller than this are skipped.

    Raises:
        ValueError: empty ``monitor`` or ``factor`` outside (0, 1).
    """

    interval: Interval = "epoch"

    def __init__(
        self,
        optimizer: Optimizer,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        factor: float = 0.5,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not monitor:
            raise ValueError("ReduceOnPlateau: monitor is empty; name a logged metric such as 'val/loss'.")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceOnPlateau: factor={factor} must be in (0, 1); 0.5 halves the LR.")
        self.monitor = monitor
        super().__init__(
            optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold,
            threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=eps,
        )
