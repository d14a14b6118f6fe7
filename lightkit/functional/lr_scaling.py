"""The large-batch rule: LR scaling with the global batch and a gradual warmup (Goyal et al. 2017,
https://arxiv.org/abs/1706.02677). Pure Python; :class:`lightkit.callbacks.LRScaling` maps a trainer onto it.

* :func:`global_batch`: samples per optimizer step, ``batch_size x accumulate_grad_batches x devices x num_nodes``.
* :func:`lr_scale`: the LR multiplier ``k = global / reference`` (``linear``, Goyal et al. sec. 2.1) or
  ``sqrt(k)`` (``sqrt``: Krizhevsky 2014, https://arxiv.org/abs/1404.5997, and the usual choice for Adam-type
  optimizers, Malladi et al. 2022, https://arxiv.org/abs/2205.10287), or 1 (``none``).
* :func:`warmup_factor`: Goyal's gradual warmup, a multiplier that rises linearly from ``start`` (by default
  ``1 / scale``, i.e. the reference-batch LR) to 1 over the first ``warmup_steps`` optimizer steps.
* :func:`scale_param_groups`: multiply every LR key of optimizer param groups (``lr``, ``initial_lr``,
  ``max_lr``, ``min_lr``) by one factor, so discriminative ratios are kept and a group at LR 0 stays at 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

__all__ = ["LR_KEYS", "ScalingRule", "global_batch", "lr_scale", "scale_param_groups", "warmup_factor"]

ScalingRule = Literal["linear", "sqrt", "none"]
RULES: tuple[str, ...] = ("linear", "sqrt", "none")

LR_KEYS: tuple[str, ...] = ("lr", "initial_lr", "max_lr", "min_lr")
"""Keys of an optimizer param group that hold (a part of) its LR schedule; all scale together."""


def _positive_int(fn: str, name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name}={value!r} must be an int >= 1 ({hint}).")
    return value


def global_batch(batch_size: int, accumulate_grad_batches: int = 1, devices: int = 1, num_nodes: int = 1) -> int:
    """Samples that contribute to one optimizer step.

    Args:
        batch_size: samples per loader batch on one process.
        accumulate_grad_batches: loader batches per optimizer step.
        devices: processes per node (data parallel).
        num_nodes: nodes.

    Raises:
        ValueError: any argument that is not an int >= 1.
    """
    product = 1
    for name, value, hint in (("batch_size", batch_size, "samples per loader batch"),
                              ("accumulate_grad_batches", accumulate_grad_batches, "batches per optimizer step"),
                              ("devices", devices, "processes per node"), ("num_nodes", num_nodes, "nodes")):
        product *= _positive_int("global_batch", name, value, hint)
    return product


def lr_scale(batch: int, reference_batch: int, rule: ScalingRule = "linear") -> float:
    """The LR multiplier for ``batch`` samples per step when the LR was set for ``reference_batch``.

    Args:
        batch: global batch of the run (samples per optimizer step).
        reference_batch: global batch the configured LR was chosen (or found) at.
        rule: ``linear`` (``k = batch / reference_batch``), ``sqrt`` (``sqrt(k)``) or ``none`` (1).

    Raises:
        ValueError: an unknown rule, or a batch that is not an int >= 1.
    """
    if rule not in RULES:
        raise ValueError(f"lr_scale: rule={rule!r} is not one of {list(RULES)}.")
    k = _positive_int("lr_scale", "batch", batch, "samples per optimizer step") / _positive_int(
        "lr_scale", "reference_batch", reference_batch, "the batch the LR was chosen at")
    return k if rule == "linear" else math.sqrt(k) if rule == "sqrt" else 1.0


def warmup_factor(step: float, warmup_steps: float, start: float) -> float:
    """Goyal et al.'s gradual warmup: ``start + (1 - start) * step / warmup_steps`` below ``warmup_steps``, else 1.

    Multiplies the scheduled LR of optimizer step ``step`` (0-based). With ``start = 1 / k`` the first step
    runs at the reference-batch LR and the full scaled LR is reached after ``warmup_steps`` steps.

    Args:
        step: optimizer steps taken before this one (>= 0).
        warmup_steps: length of the ramp in optimizer steps (>= 0; 0: no warmup).
        start: factor at step 0, in [0, 1].

    Raises:
        ValueError: a negative step or length, or ``start`` outside [0, 1].
    """
    if not step >= 0:
        raise ValueError(f"warmup_factor: step={step} must be >= 0; optimizer steps count from 0.")
    if not warmup_steps >= 0:
        raise ValueError(f"warmup_factor: warmup_steps={warmup_steps} must be >= 0 (optimizer steps; 0: none).")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"warmup_factor: start={start} must be in [0, 1] (fraction of the scaled LR at step 0).")
    if step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * step / warmup_steps


def scale_param_groups(groups: Iterable[MutableMapping[str, Any]], factor: float) -> None:
    """Multiply every LR key (:data:`LR_KEYS`) of each param group by ``factor``, in place.

    Tensor LRs (``torch.optim`` with ``lr=torch.tensor(...)``) are scaled in place too.

    Raises:
        ValueError: a factor that is not finite and > 0.
    """
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"scale_param_groups: factor={factor} must be finite and > 0.")
    for group in groups:
        for key in LR_KEYS:
            value = group.get(key)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)):
                group[key] = value * factor
            elif hasattr(value, "mul_"):
                value.mul_(factor)
