"""Lean classification metrics: accuracy, macro F1 and top-k accuracy as small torchmetrics ``Metric``\\ s.

Why not torchmetrics' ``MulticlassAccuracy`` / ``MulticlassF1Score``: with their input validation and
general stat-score machinery, the three updates cost 5-10 ms of Python per training step on a CPU
(measured for issue 12, ``benchmarks/overhead.py``), several per cent of a resnet18 step at 32 px,
and their argument checks read tensors back to the host on a GPU. Here each update is one or two
tensor ops (a ``bincount`` into a confusion matrix, an ``argmax`` or a ``topk`` compare) and no host
sync. The states are sums, reduced over DDP ranks by torchmetrics when computed, so the figures are
exact over all ranks' samples. They are still ``Metric`` objects, so ``LightningModule.log`` computes
and resets them at epoch end as before.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["EpochMetricLogging", "Figure", "LeanClassificationMetric", "accuracy_from_confusion", "macro_f1_from_confusion"]

Figure = Literal["acc", "f1", "acc_top5"]


def accuracy_from_confusion(confusion: Tensor) -> Tensor:
    """Micro accuracy: the diagonal over the total (0 when empty). ``confusion[true, pred]``."""
    return (confusion.diagonal().sum() / confusion.sum().clamp_min(1)).float()


def macro_f1_from_confusion(confusion: Tensor) -> Tensor:
    """Macro F1 over the classes that occur as a target or a prediction (as scikit-learn and torchmetrics).

    ``F1_c = 2 tp / (2 tp + fp + fn)``; a class never seen and never predicted has no F1 and is left
    out of the mean instead of counting as 0 or 1. ``confusion[true, pred]``.
    """
    tp = confusion.diagonal().double()
    denom = confusion.sum(0).double() + confusion.sum(1).double()  # = 2 tp + fp + fn
    present = (denom > 0).double()
    f1 = 2 * tp / denom.clamp_min(1)
    return ((f1 * present).sum() / present.sum().clamp_min(1)).float()  # masked mean: no host sync


class LeanClassificationMetric(Metric):
    """One figure of a multiclass classifier from logits ``(N, C)`` and class indices ``(N,)``.

    Args:
        num_classes: number of classes C.
        figure: ``acc`` (micro accuracy), ``f1`` (macro F1, from a C x C confusion matrix) or
            ``acc_top5`` (the target among the 5 largest logits; needs C > 5).

    Targets are not range-checked per batch (a host sync on a GPU); the loss computed on the same
    batch has already rejected an out-of-range class index.

    Raises:
        ValueError: ``num_classes < 2``, an unknown ``figure``, or ``acc_top5`` with 5 classes or fewer.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int, figure: Figure = "acc") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"LeanClassificationMetric: num_classes={num_classes} must be >= 2.")
        if figure not in ("acc", "f1", "acc_top5"):
            raise ValueError(f"LeanClassificationMetric: figure={figure!r}; choose 'acc', 'f1' or 'acc_top5'.")
        if figure == "acc_top5" and num_classes <= 5:
            raise ValueError(f"LeanClassificationMetric: acc_top5 needs more than 5 classes, got num_classes={num_classes}.")
        self.num_classes = num_classes
        self.figure = figure
        if figure == "f1":
            self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        else:
            self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        target = target.long()
        if self.figure == "f1":
            c = self.num_classes
            self.confusion += torch.bincount(target * c + logits.argmax(dim=1), minlength=c * c).view(c, c)
            return
        if self.figure == "acc":
            hit = logits.argmax(dim=1) == target
        else:
            hit = (logits.topk(5, dim=1).indices == target.view(-1, 1)).any(dim=1)
        self.correct += hit.sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        if self.figure == "f1":
            return macro_f1_from_confusion(self.confusion)
        return (self.correct / self.total.clamp_min(1)).float()


class EpochMetricLogging:
    """LightningModule mixin: hand a metric collection to ``self.log_dict`` once per epoch, not per step.

    Epoch-level ``Metric`` objects only need to be registered with Lightning once per epoch: they keep
    accumulating through their own ``update`` calls, and Lightning computes and resets them at the
    epoch's end all the same. Logging them every step costs Lightning about 1 ms of Python per metric
    and step (it moves each logged ``Metric`` to its device on every ``log`` call): for accuracy, F1
    and top-5, 2.3 ms of a 20 ms step measured (``benchmarks/metric_logging.py``, RESULTS.md).
    The registrations are forgotten at the start of every train, validation and test epoch, so a
    resumed epoch, a mid-epoch validation and the sanity check each log their metrics again.
    """

    def log_metrics_once(self, metrics: Any, **kwargs: Any) -> None:
        logged: set[int] = self.__dict__.setdefault("_lightkit_logged_metrics", set())
        if id(metrics) not in logged:
            self.log_dict(metrics, **kwargs)  # type: ignore[attr-defined]
            logged.add(id(metrics))

    def _forget_logged_metrics(self) -> None:
        self.__dict__.setdefault("_lightkit_logged_metrics", set()).clear()

    def on_train_epoch_start(self) -> None:
        self._forget_logged_metrics()

    def on_validation_epoch_start(self) -> None:
        self._forget_logged_metrics()

    def on_test_epoch_start(self) -> None:
        self._forget_logged_metrics()
