"""The shared tail of every lightkit schedule: :class:`FactorScheduler` (durations, warmup, interval, resume).

A subclass declares only its own hyperparameters and forwards the rest with ``**tail`` to
:class:`FactorScheduler`, whose ``__init__`` is the one place ``warmup``, ``warmup_start``,
``interval``, ``total_steps`` and ``steps_per_epoch`` are declared, typed and documented. jsonargparse
(LightningCLI) follows ``super().__init__(optimizer, **tail)``, so ``--print_config`` and ``--help`` list
every argument of every schedule (``tests/test_schedulers.py`` checks it); lightkit's own factory
inspection (:func:`lightkit._factory.unbound_parameters`) follows it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lightkit.functional import schedules as F

__all__ = ["Duration", "FactorScheduler", "Interval", "bind"]

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
            raise ValueError(f"{name}: warmup_start={warmup_start} must be in [0, 1] (fraction of the LR "
                             "reached).")
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
            "mistake). Use interval: step (the default) and give durations in epochs as strings such as "
            "'3ep'."
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
            raise ValueError(f"{name}: {what}={value!r} is not a duration; use an int (steps), a fraction or "
                             "'3ep'.")
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


def bind(fn: Callable[..., float], **kwargs: Any) -> F.Schedule:
    """``fn`` with its hyperparameters bound: a one-argument schedule of the step."""
    return partial(fn, **kwargs)


