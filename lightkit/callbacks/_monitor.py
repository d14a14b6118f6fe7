"""Plumbing shared by the monitoring callbacks: pause flag, interval, output folder, logger dispatch; figures
come
from :mod:`lightkit.plotting`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

# The figure helpers live in lightkit.plotting (one style for every PNG); re-exported for the monitors.
from lightkit.plotting import new_figure, save_figure

__all__ = [
    "PAUSE_MONITOR_FLAG",
    "check_pattern",
    "log_image",
    "log_scalars",
    "monitor_dir",
    "new_figure",
    "paused",
    "save_figure",
    "step_loss",
    "wandb_histograms",
]

PAUSE_MONITOR_FLAG = "lightkit_pause_monitor"
"""Attribute that, when True on the LightningModule or the Trainer, pauses monitoring and diagnoses (the LR
range test sets it)."""


def paused(trainer: Trainer, pl_module: LightningModule) -> bool:
    """Whether monitoring is paused by the flag on the module or the trainer."""
    return bool(getattr(pl_module, PAUSE_MONITOR_FLAG, False) or getattr(trainer, PAUSE_MONITOR_FLAG, False))


def check_pattern(component: str, name: str, value: str, keywords: tuple[str, ...]) -> None:
    """Validate a module / parameter selector: one of ``keywords`` or a regex over names.

    Raises:
        ValueError: ``value`` is neither a keyword nor a valid regex; the message names the component,
            the argument, the regex error and the keywords.
    """
    if value in keywords:
        return
    try:
        re.compile(value)
    except re.error as err:
        choices = ", ".join(repr(k) for k in keywords)
        raise ValueError(f"{component}: {name}={value!r} is not a valid regex ({err}); use {choices} or fix "
                         "the "
                         f"pattern.") from None


def step_loss(outputs: Any) -> Tensor | None:
    """The loss in what ``training_step`` returned (a tensor or a dict with ``"loss"``), or None."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None


def monitor_dir(trainer: Trainer, dirpath: str | None) -> Path:
    """``dirpath`` or ``<trainer.log_dir or default_root_dir>/monitor``.

    ``trainer.log_dir`` broadcasts from rank zero, so call this on every rank (in ``setup``).
    """
    if dirpath is not None:
        return Path(dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "monitor"


def _wandb(trainer: Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def log_scalars(
    trainer: Trainer, metrics: dict[str, float], step: int, wandb_extra: dict[str, Any] | None = None
) -> None:
    """Send scalars to every logger at ``step``; W&B loggers also get ``wandb_extra`` (histograms) in the same
    record.

    Non-finite scalars are dropped (a NaN in a CSV column or W&B chart helps nobody; the diagnoses report it).
    """
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and wandb_extra:
            logger.log_metrics({**finite, **wandb_extra}, step=step)
        elif finite:
            logger.log_metrics(finite, step=step)


def wandb_histograms(
    trainer: Trainer, hists: dict[str, tuple[list[float], list[float]]]
) -> dict[str, Any] | None:
    """``{key: wandb.Histogram}`` from ``{key: (counts, edges)}`` when a WandbLogger is attached, else
    None."""
    if not hists or not _wandb(trainer):
        return None
    import wandb  # only when a WandbLogger is attached: the import takes about a second

    return {key: wandb.Histogram(np_histogram=(counts, edges)) for key, (counts, edges) in hists.items()}


def log_image(trainer: Trainer, key: str, path: Path, step: int) -> None:
    """Log a PNG file to every attached WandbLogger (other loggers keep only the file)."""
    for logger in _wandb(trainer):
        logger.log_image(key=key, images=[str(path)], step=step)
