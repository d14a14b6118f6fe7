"""Torch ``LRScheduler`` classes over :mod:`lightkit.functional.schedules`, selectable from YAML.

Each class multiplies **every parameter group's own LR** by the same factor, so discriminative LRs keep
their ratios, and steps **per optimizer step** by default (``interval = "step"``, which
``ImageClassifier`` passes on to Lightning)::

    model:
      optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentum: 0.9, nesterov: true}}
      lr_scheduler:
        class_path: lightkit.lr_schedulers.OneCycle
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

Any phases compose with :class:`Phases` (warmup + cosine + flat tail; fastai's ``combine_scheds``).

One file per family: ``base`` (the shared tail: durations, warmup, interval, resume), ``decay``,
``cyclic``, ``phases``, ``plateau``. ``lightkit.schedulers`` is the old path of these classes, kept so
configs and checkpoints written before the move still load.

Resume is exact: ``state_dict`` holds only plain numbers (safe for ``torch.load(weights_only=True)``),
and ``load_state_dict`` rebuilds the schedule from them and re-applies the current LR and momentum.
"""

from lightkit.lr_schedulers.base import Duration, FactorScheduler, Interval
from lightkit.lr_schedulers.cyclic import SGDR, Cyclic, OneCycle
from lightkit.lr_schedulers.decay import (
    Constant,
    Cosine,
    DecayToFinal,
    Exponential,
    InverseSqrt,
    Linear,
    MultiStep,
    StepDecay,
)
from lightkit.lr_schedulers.phases import Phase, Phases
from lightkit.lr_schedulers.plateau import ReduceOnPlateau

__all__ = [
    "SGDR",
    "Constant",
    "Cosine",
    "Cyclic",
    "DecayToFinal",
    "Duration",
    "Exponential",
    "FactorScheduler",
    "InverseSqrt",
    "Interval",
    "Linear",
    "MultiStep",
    "OneCycle",
    "Phase",
    "Phases",
    "ReduceOnPlateau",
    "StepDecay",
]
