"""Pure torch / Python functions behind lightkit's callbacks and schedulers; no Lightning import."""

from lightkit.functional.penalties import l1_penalty
from lightkit.functional.schedules import (
    Warmup,
    constant,
    cosine,
    cyclic,
    exponential,
    inverse_sqrt,
    linear,
    multistep,
    one_cycle,
    one_cycle_momentum,
    sgdr,
    step_decay,
    with_warmup,
)

__all__ = [
    "Warmup",
    "constant",
    "cosine",
    "cyclic",
    "exponential",
    "inverse_sqrt",
    "l1_penalty",
    "linear",
    "multistep",
    "one_cycle",
    "one_cycle_momentum",
    "sgdr",
    "step_decay",
    "with_warmup",
]
