"""The old import path of :mod:`lightkit.lr_schedulers`, kept so configs (``class_path:
lightkit.schedulers.Cosine``) and checkpoints written before the move still load. New code imports
``lightkit.lr_schedulers``."""

from lightkit.lr_schedulers import (
    SGDR,
    Constant,
    Cosine,
    Cyclic,
    DecayToFinal,
    Duration,
    Exponential,
    FactorScheduler,
    Interval,
    InverseSqrt,
    Linear,
    MultiStep,
    OneCycle,
    Phase,
    Phases,
    ReduceOnPlateau,
    StepDecay,
)

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
