"""``RegularizationSummary``: one log line at fit start saying which regularizers are on and which are off."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightkit.callbacks.mixing import MixUpCutMix

__all__ = ["RegularizationSummary", "regularization_summary"]

_CUTOUT_NAMES = {"cutout", "CoarseDropout", "XYMasking", "GridDropout"}
_LABELS = {"l1": "L1", "mixup_cutmix": "mixup/cutmix"}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _weight_decay(trainer: Trainer) -> str | None:
    parts = []
    for opt in trainer.optimizers:
        decays = sorted({float(g.get("weight_decay", 0.0) or 0.0) for g in opt.param_groups} - {0.0})
        if not decays:
            continue
        name = type(opt).__name__
        decoupled = name in {"AdamW", "LAMB", "Lion"} or bool(opt.defaults.get("decoupled_weight_decay"))
        exempt = " (biases and norms exempt)" if any(not g.get("weight_decay") for g in opt.param_groups) else ""
        values = "/".join(f"{d:g}" for d in decays)
        parts.append(f"weight decay {values} ({name}, {'decoupled' if decoupled else 'L2 in the gradient'}){exempt}")
    return "; ".join(parts) or None


def _dropout(pl_module: LightningModule) -> str | None:
    layers = [(n, m.p) for n, m in pl_module.named_modules() if isinstance(m, _DROPOUT) and m.p > 0]
    if not layers:
        return None
    rates = "/".join(f"{p:g}" for p in sorted({p for _, p in layers}))
    where = ", ".join(n for n, _ in layers[:3]) + (", ..." if len(layers) > 3 else "")
    return f"dropout {rates} ({len(layers)} layer{'s' * (len(layers) > 1)}: {where})"


def _augmentation(datamodule: Any) -> tuple[str | None, str | None]:
    spec = getattr(datamodule, "augmentations", None)
    if spec is None or spec == "none":
        return None, None
    fill = getattr(datamodule, "fill", None)
    suffix = f" (fill {fill})" if fill else ""
    if isinstance(spec, str):
        return f"augmentation preset {spec}{suffix}", None
    names = [str(item.get("name")) if isinstance(item, dict) else str(item) for item in spec]
    cutout = [n for n in names if n in _CUTOUT_NAMES]
    return f"augmentation [{', '.join(names)}]{suffix}", (f"cutout ({', '.join(cutout)})" if cutout else None)


def regularization_summary(trainer: Trainer, pl_module: LightningModule) -> dict[str, str | None]:
    """What regularizes this fit: ``{regularizer: description, or None when it is off}``.

    Reads public state only: the optimizers' ``weight_decay``, the module's ``hparams`` (``l1``,
    ``label_smoothing``, ``drop_path_rate``) and dropout layers, the data module's ``augmentations`` /
    ``fill``, and the trainer's ``MixUpCutMix``, ``EarlyStopping`` and monitored ``ModelCheckpoint``
    callbacks. Call it once the optimizers exist (``on_fit_start`` or later).
    """
    hparams = dict(getattr(pl_module, "hparams", {}) or {})
    mixers = [cb for cb in trainer.callbacks if isinstance(cb, MixUpCutMix)]
    smoothing = [f"{hparams['label_smoothing']:g} (loss)"] if hparams.get("label_smoothing") else []
    smoothing += [f"{cb.label_smoothing:g} (MixUpCutMix targets)" for cb in mixers if cb.label_smoothing]
    augmentation, cutout = _augmentation(getattr(trainer, "datamodule", None))
    mixing = []
    for cb in mixers:
        kinds = [f"{k} alpha {a:g}" for k, a in (("mixup", cb.mixup_alpha), ("cutmix", cb.cutmix_alpha)) if a > 0]
        off = f", off for the last {cb.off_last_epochs} epochs" if cb.off_last_epochs else ""
        mixing.append(f"{' + '.join(kinds)} on {cb.prob:.0%} of batches{off}")
    stopping = [f"early stopping on {cb.monitor} ({cb.mode}, patience {cb.patience} checks)"
                for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]
    best = [f"best checkpoint by {cb.monitor} ({cb.mode})"
            for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor]
    return {
        "weight_decay": _weight_decay(trainer),
        "l1": f"L1 {hparams['l1']:g}" if hparams.get("l1") else None,
        "dropout": _dropout(pl_module),
        "stochastic_depth": (f"stochastic depth {hparams['drop_path_rate']:g}" if hparams.get("drop_path_rate")
                             else None),
        "label_smoothing": f"label smoothing {', '.join(smoothing)}" if smoothing else None,
        "augmentation": augmentation,
        "cutout": cutout,
        "mixup_cutmix": "; ".join(mixing) or None,
        "early_stopping": "; ".join(stopping) or None,
        "best_checkpoint": "; ".join(best) or None,
    }


class RegularizationSummary(Callback):
    """Logs one line at fit start: the active regularizers with their strengths, then those that are off.

    Example: ``lightkit regularization: on: weight decay 0.05 (AdamW, decoupled) (biases and norms
    exempt) | dropout 0.2 (1 layer: head.0) | ... ; off: L1, stochastic depth``. The same mapping is
    kept in ``self.summary`` (see :func:`regularization_summary`); nothing is logged as a metric.
    Rank zero only; stateless.
    """

    def __init__(self) -> None:
        self.summary: dict[str, str | None] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.summary = regularization_summary(trainer, pl_module)
        on = [text for text in self.summary.values() if text]
        off = [_LABELS.get(key, key.replace("_", " ")) for key, text in self.summary.items() if not text]
        rank_zero_info(
            f"lightkit regularization: on: {' | '.join(on) or 'nothing'}; off: {', '.join(off) or 'nothing'}"
        )
