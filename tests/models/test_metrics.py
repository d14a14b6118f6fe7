"""The one metric path (torchmetrics, validate_args=False) against scikit-learn, several updates, absent
classes."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from lightkit.models.metrics import multiclass_metric


def _data(n: int = 300, c: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c - 2, (n,), generator=g)  # classes 10 and 11 never occur as targets
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n // 2), y[: n // 2]] += 4.0
    logits[::37, c - 1] += 10.0  # ... but class 11 is predicted now and then (a false positive only)
    return logits, y


def _run(figure: str, logits: torch.Tensor, y: torch.Tensor) -> float:
    metric = multiclass_metric(logits.shape[1], figure)  # type: ignore[arg-type]
    for start in range(0, len(y), 64):  # several updates, as in an epoch
        metric.update(logits[start:start + 64], y[start:start + 64])
    return metric.compute().item()


def test_match_sklearn() -> None:
    logits, y = _data()
    pred = logits.argmax(1)
    assert _run("acc", logits, y) == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    # macro F1 over the classes seen as a target or a prediction: the never-seen class 10 is left out
    assert _run("f1", logits, y) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    top5 = (logits.topk(5, dim=1).indices == y.view(-1, 1)).any(dim=1).float().mean().item()
    assert _run("acc_top5", logits, y) == pytest.approx(top5, abs=1e-6)


def test_no_per_step_validation_and_reset() -> None:
    metric = multiclass_metric(3, "f1")
    assert metric.validate_args is False  # the cost that once justified a hand-written metric
    metric.update(torch.eye(3), torch.arange(3))
    assert metric.compute().item() == 1.0
    metric.reset()
    metric.update(torch.eye(3), torch.tensor([1, 2, 0]))
    assert metric.compute().item() == 0.0


@pytest.mark.parametrize(("args", "match"), [
    ((1, "acc"), r"num_classes=1 must be >= 2"),
    ((10, "auc"), r"figure='auc'; choose 'acc', 'f1' or 'acc_top5'"),
    ((5, "acc_top5"), r"acc_top5 needs more than 5 classes, got num_classes=5"),
])
def test_argument_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        multiclass_metric(*args)
