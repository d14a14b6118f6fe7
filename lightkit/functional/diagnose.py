"""The rules of :class:`lightkit.callbacks.Diagnose` as pure functions, and its messages in one table.

CS231n's "babysitting the learning process" as decisions over plain numbers: each rule takes the
statistics by name and returns what it found (or nothing); :func:`message` turns a finding into the
one-line warning. A message names the fix in lightkit's YAML keys (:data:`LIGHTKIT_TERMS`) or, for a
LightningModule lightkit did not write, in generic words (:data:`GENERIC_TERMS`). No Lightning import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = [
    "GENERIC_TERMS",
    "LIGHTKIT_TERMS",
    "LR_KEY",
    "MESSAGES",
    "DiagnosisKind",
    "TrainingDiverged",
    "dead_layers",
    "exploding_loss",
    "gradient_verdict",
    "message",
    "missing_gradients",
    "name_list",
    "saturated_layers",
    "terms_for",
]

DiagnosisKind = Literal[
    "nonfinite_loss", "exploding_loss", "nonfinite_val_loss", "exploding_gradients", "vanishing_gradients",
    "no_gradient", "dead_layer", "saturated_layer", "overfitting", "noisy_loss", "loss_not_decreasing",
]

LR_KEY = "model.init_args.optimizer.init_args.lr"

# The fix, in lightkit's config keys ...
LIGHTKIT_TERMS: dict[str, str] = {
    "lr": f"`{LR_KEY}`",
    "clip": "`trainer.gradient_clip_val: 1.0`",
    "head_init": "`model.init_args.head_init`",
    "activation": "`model.init_args.activation`",
    "dropout": "`model.init_args.dropout`",
    "weight_decay": "`model.init_args.optimizer.init_args.weight_decay`",
    "label_smoothing": "`model.init_args.label_smoothing`",
    "batch_size": "`data.init_args.batch_size`",
    "max_epochs": "`trainer.max_epochs`",
}
# ... and in words for a LightningModule lightkit did not write (no such config exists there).
GENERIC_TERMS: dict[str, str] = {
    "lr": "the learning rate (your configure_optimizers)",
    "clip": "gradient clipping (Trainer(gradient_clip_val=1.0))",
    "head_init": "the initialisation of the last layers",
    "activation": "the activation function",
    "dropout": "dropout",
    "weight_decay": "the optimizer's weight decay",
    "label_smoothing": "label smoothing",
    "batch_size": "the DataLoader's batch_size",
    "max_epochs": "Trainer(max_epochs)",
}

# One template per diagnosis; {lr}, {clip} ... are filled from the terms, the rest from the finding.
MESSAGES: dict[str, str] = {
    "nonfinite_loss": (
        "Diagnose: training loss is {value} at step {step}; {action}. Last good checkpoint: {last_good}; those from "
        "step {step} on hold diverged weights. The LR is likely too high or the init broken: lower {lr} (e.g. 10x), "
        "clip with {clip}, or check the init ({head_init})."
    ),
    "exploding_loss": (
        "Diagnose: training loss exploded to {value} at step {step} ({factor:.3g}x its initial {initial:.4g}); "
        "{action}. Last good checkpoint: {last_good}. The LR is likely too high: lower {lr} (e.g. 10x) or clip "
        "with {clip}."
    ),
    "nonfinite_val_loss": (
        "Diagnose: validation loss ({key}) is {value} at step {step}: the weights diverged; {action}. Last good "
        "checkpoint: {last_good}. Lower {lr} (e.g. 10x) or clip with {clip}."
    ),
    "dead_layer": (
        "Diagnose: {count} layer(s) with >= {fraction:.0%} dead units at step {step} ({layers}): they output 0 for "
        "the whole batch and pass no gradient. Usually a too high LR knocked them out: lower {lr}; or check the "
        "init ({head_init}: kaiming) or use a leaky activation ({activation}: leaky_relu)."
    ),
    "saturated_layer": (
        "Diagnose: {count} tanh/sigmoid layer(s) with >= {fraction:.0%} saturated outputs at step {step} ({layers}): "
        "their local gradient is ~0. Scale the init down ({head_init}: xavier), normalise the inputs, lower {lr}, "
        "or use {activation}: relu."
    ),
    "exploding_gradients": (
        "Diagnose: global gradient norm {norm:.3g} at step {step} is above max_grad_norm={limit:g}: exploding "
        "gradients. Lower {lr} or clip with {clip}."
    ),
    "vanishing_gradients": (
        "Diagnose: global gradient norm {norm:.3g} at step {step} is below min_grad_norm={limit:g} while the loss is "
        "still {loss:.4g}: vanishing gradients. Check the init ({head_init}: auto), prefer relu to tanh "
        "({activation}), keep BatchNorm / residual connections, or raise {lr}."
    ),
    "no_gradient": (
        "Diagnose: {count} trainable parameter(s) get no gradient at step {step} ({layers}): they do not reach the "
        "loss, or sit behind dead units. Freeze them on purpose (requires_grad=False) or fix the forward pass."
    ),
    "overfitting": (
        "Diagnose: validation loss has stayed above its best {best:.4g} for {since} evaluations (now {now:.4g}) while "
        "training loss fell ({train_then:.4g} -> {train_now:.4g}): overfitting. Regularise ({dropout}, "
        "{weight_decay}, {label_smoothing}, augmentation) or stop early (EarlyStopping on {key}, fewer "
        "{max_epochs}) and keep the best checkpoint."
    ),
    # The same finding when the trainer's checkpoint callback keeps the best weights by that loss (an info line).
    "overfitting_kept": (
        "Diagnose: validation loss has stayed above its best {best:.4g} for {since} evaluations (now {now:.4g}) while "
        "training loss fell ({train_then:.4g} -> {train_now:.4g}): overfitting; a ModelCheckpoint keeps the best "
        "{key} weights, from before the rise (test them: ckpt_path='best')."
    ),
    "noisy_loss": (
        "Diagnose: training loss is very noisy at step {step} (detrended coefficient of variation {cv:.2f} >= "
        "noise_cv={limit:g} over the last {window} steps): the batch is too small or the LR too high. Raise "
        "{batch_size} or lower {lr}."
    ),
    "loss_not_decreasing": (
        "Diagnose: training loss has not gone down after {seen} steps (smoothed {now:.4g} vs initial {initial:.4g}): "
        "the LR is likely too low, or the init or labels are wrong. Raise {lr} (the LR range test suggests one) and "
        "check {head_init} and the labels."
    ),
}


class TrainingDiverged(RuntimeError):
    """The training diverged (non-finite or exploding loss); raised to stop the run at that step so that
    no checkpoint is written from the diverged weights.

    Attributes:
        step: optimizer step at which it was seen.
        last_good: path of the last checkpoint saved before it, or None.
    """

    def __init__(self, message: str, step: int, last_good: str | None) -> None:
        super().__init__(message)
        self.step = step
        self.last_good = last_good


def name_list(items: Sequence[str], limit: int = 4) -> str:
    """``a, b, c, d and 3 more``: the first ``limit`` items of a list for a one-line message."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def terms_for(module: object) -> dict[str, str]:
    """How to name a fix for ``module``: lightkit's config keys for its models and their subclasses (they
    take the optimizer from the config: ``optimizer_factory``), words for any other module."""
    return LIGHTKIT_TERMS if hasattr(module, "optimizer_factory") else GENERIC_TERMS


def message(kind: str, terms: Mapping[str, str] = LIGHTKIT_TERMS, **values: object) -> str:
    """The warning line of ``kind`` with the fix in ``terms`` and the finding's ``values``."""
    return MESSAGES[kind].format(**terms, **values)


def exploding_loss(value: float, initial: Sequence[float], factor: float | None, complete: int) -> bool:
    """A finite loss more than ``factor`` times the mean initial loss (once ``complete`` initial losses
    are known; never for ``factor`` None)."""
    if factor is None or len(initial) < complete or not math.isfinite(value):
        return False
    start = sum(initial) / len(initial)
    return start > 0 and value > factor * start


def dead_layers(stats: Mapping[str, Mapping[str, float]], fraction: float) -> list[str]:
    """``"name 97%"`` for each layer whose ``dead`` statistic is at least ``fraction``."""
    return [f"{name} {s['dead']:.0%}" for name, s in stats.items() if s["dead"] >= fraction]


def saturated_layers(stats: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str], fraction: float) -> list[str]:
    """``"name 95%"`` for each tanh / sigmoid layer whose ``saturated`` statistic is at least ``fraction``."""
    return [f"{name} {s['saturated']:.0%}" for name, s in stats.items()
            if kinds.get(name) in ("tanh", "sigmoid") and s["saturated"] >= fraction]


def gradient_verdict(norms: Sequence[float], min_norm: float, max_norm: float, loss_now: float,
                     loss_start: float) -> tuple[Literal["exploding", "vanishing"] | None, float]:
    """The global norm of per-parameter gradient norms and whether it explodes (above ``max_norm`` or
    non-finite) or vanishes (below ``min_norm`` while the loss is still above 10 % of its start)."""
    total = math.sqrt(sum(v * v for v in norms))
    if not math.isfinite(total) or total > max_norm:
        return "exploding", total
    if total < min_norm and math.isfinite(loss_now) and loss_now >= 0.1 * loss_start:
        return "vanishing", total
    return None, total


def missing_gradients(names: Sequence[str], norms: Sequence[float], has_grad: Sequence[bool],
                      trainable: Sequence[bool]) -> list[str]:
    """Trainable parameters whose gradient is missing or exactly zero."""
    return [name for name, norm, has, train in zip(names, norms, has_grad, trainable, strict=True)
            if train and (not has or norm == 0.0)]
