"""Metric-driven: reduce the LR when a monitored metric plateaus (torch's ``ReduceLROnPlateau``, per
epoch)."""

from __future__ import annotations

from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightkit.lr_schedulers.base import Interval

__all__ = ["ReduceOnPlateau"]


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
