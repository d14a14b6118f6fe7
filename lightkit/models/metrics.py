"""The classification metrics of lightkit's models: torchmetrics' classes without per-step validation,
and logging them once per epoch.

One path for ``ImageClassifier`` and ``MultiTaskClassifier`` (``{stage}/acc``, ``{stage}/f1``,
``{stage}/acc_top5``): torchmetrics' ``MulticlassAccuracy`` (micro), ``MulticlassF1Score`` (macro) and
``MulticlassAccuracy(top_k=5)`` with ``validate_args=False``. Their input validation was the cost that
once justified a hand-written metric (14.4 vs 3.5 ms per step at load 11.9); without it the three
updates cost 0.57 ms more per step than the hand-written ones, 0.04 % of a quickstart training step on
the same CPU (``benchmarks/metrics.py``, RESULTS.md "Metrics"), so the hand-written metric was removed.
Without validation, targets are not range-checked per batch (a host sync on a GPU); the loss computed
on the same batch has already rejected an out-of-range class index.
"""

from __future__ import annotations

from typing import Any, Literal

from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

__all__ = ["FIGURES", "EpochMetricLogging", "Figure", "multiclass_metric"]

Figure = Literal["acc", "f1", "acc_top5"]
FIGURES: tuple[Figure, ...] = ("acc", "f1", "acc_top5")


def multiclass_metric(num_classes: int, figure: Figure = "acc") -> Metric:
    """One figure of a multiclass classifier, updated with logits ``(N, C)`` and class indices ``(N,)``.

    Args:
        num_classes: number of classes C, >= 2.
        figure: ``acc`` (micro accuracy), ``f1`` (macro F1 over the classes that occur as a target or a
            prediction, as scikit-learn) or ``acc_top5`` (the target among the 5 largest logits; C > 5).

    Raises:
        ValueError: ``num_classes < 2``, an unknown ``figure``, or ``acc_top5`` with 5 classes or fewer.
    """
    if num_classes < 2:
        raise ValueError(f"multiclass_metric: num_classes={num_classes} must be >= 2.")
    if figure not in FIGURES:
        raise ValueError(f"multiclass_metric: figure={figure!r}; choose 'acc', 'f1' or 'acc_top5'.")
    if figure == "acc_top5" and num_classes <= 5:
        raise ValueError("multiclass_metric: acc_top5 needs more than 5 classes, got "
                         f"num_classes={num_classes}.")
    if figure == "f1":
        return MulticlassF1Score(num_classes, average="macro", validate_args=False)
    return MulticlassAccuracy(
        num_classes, top_k=5 if figure == "acc_top5" else 1, average="micro", validate_args=False
    )


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
