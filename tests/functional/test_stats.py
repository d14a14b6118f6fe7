"""``lightkit.functional.stats`` against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightkit.functional.stats import (
    ACTIVATION_STATS,
    ActivationRecorder,
    activation_kind,
    activation_stats,
    grad_norms,
    histogram,
    histogram_edges,
    loss_noise,
    not_decreasing,
    overfitting,
    select_modules,
    select_params,
    to_host,
    update_ratios,
)


def _stats(x: torch.Tensor, kind: str = "other") -> dict[str, float]:
    return dict(zip(ACTIVATION_STATS, activation_stats(x, kind).tolist(), strict=True))


def test_relu_stats_by_hand() -> None:
    a = torch.relu(torch.tensor([[-1.0, 2.0, -3.0], [-4.0, 5.0, -6.0]]))  # [[0, 2, 0], [0, 5, 0]]
    s = _stats(a, "relu")
    assert s["mean"] == pytest.approx(7 / 6)
    assert s["std"] == pytest.approx(math.sqrt(29 / 6 - (7 / 6) ** 2))  # population std
    assert s["zero"] == pytest.approx(4 / 6)
    assert s["dead"] == pytest.approx(2 / 3)  # features 0 and 2 are 0 for both samples
    assert math.isnan(s["saturated"])


def test_dead_units_are_channels_for_images_and_last_dim_for_tokens() -> None:
    img = torch.ones(2, 3, 2, 2)
    img[:, 1] = 0
    img[0, 2, 0, 0] = 0  # a zero in an alive channel: counts as zero, not dead
    s = _stats(img, "relu")
    assert s["dead"] == pytest.approx(1 / 3)
    assert s["zero"] == pytest.approx(9 / 24)
    tokens = torch.ones(2, 5, 4)
    tokens[..., 3] = 0
    assert _stats(tokens, "relu")["dead"] == pytest.approx(1 / 4)


def test_saturation_by_hand() -> None:
    assert _stats(torch.tensor([[0.995, -0.999, 0.5, 0.0]]), "tanh")["saturated"] == pytest.approx(0.5)
    assert _stats(torch.tensor([[0.005, 0.999, 0.5, 0.2]]), "sigmoid")["saturated"] == pytest.approx(0.5)


def test_activation_kind() -> None:
    assert activation_kind(nn.ReLU()) == "relu"
    assert activation_kind(nn.Tanh()) == "tanh"
    assert activation_kind(nn.Sigmoid()) == "sigmoid"
    assert activation_kind(nn.GELU()) == "other"
    assert activation_kind(nn.Linear(2, 2)) is None


def test_histogram_matches_histc_and_skips_nonfinite() -> None:
    x = torch.randn(1000)
    h = histogram(torch.cat([x, torch.tensor([float("nan"), float("inf"), -float("inf")])]), bins=10)
    lo, hi = float(x.min()), float(x.max())
    assert h[-2:].tolist() == pytest.approx([lo, hi])
    assert torch.equal(h[:10], torch.histc(x, bins=10, min=lo, max=hi))
    edges = histogram_edges(lo, hi, 10)
    counts, np_edges = np.histogram(x.numpy(), bins=10, range=(lo, hi))
    assert edges == pytest.approx(np_edges.tolist(), rel=1e-5)
    assert h[:10].sum() == 1000


def test_histogram_degenerate_inputs() -> None:
    const = histogram(torch.full((7,), 2.0), bins=4)
    assert const[:4].sum() == 7 and const[-2:].tolist() == [2.0, 2.0]
    empty = histogram(torch.tensor([float("nan")]), bins=3)
    assert empty.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert histogram_edges(1.0, 1.0, 2) == pytest.approx([1.0, 1.0 + 5e-7, 1.0 + 1e-6])


def test_grad_norms_and_update_ratio_by_hand() -> None:
    a = nn.Parameter(torch.tensor([3.0, 4.0]))
    b = nn.Parameter(torch.tensor([1.0]))
    a.grad = torch.tensor([0.6, 0.8])
    assert grad_norms([a, b]).tolist() == pytest.approx([1.0, 0.0])
    before = [torch.tensor([3.0, 4.0])]
    after = [torch.tensor([3.003, 4.004])]
    assert update_ratios(before, after).tolist() == pytest.approx([1e-3], rel=1e-3)


def test_to_host_splits_back() -> None:
    out = to_host([torch.tensor([1.0, 2.0]), torch.tensor([[3.0], [4.0]]), torch.tensor(5)])
    assert out == [[1.0, 2.0], [3.0, 4.0], [5.0]]
    assert to_host([]) == []


def test_recorder_relu_layer_fed_known_inputs() -> None:
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([-100.0, 0.0, 0.0, 0.0]))  # unit 0 pushed below 0, unit 3 always 0
    model = nn.Sequential(lin, nn.ReLU())
    recorder = ActivationRecorder(select_modules(model), bins=8)
    recorder.attach()
    assert len(model[1]._forward_hooks) == 1
    model(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    recorder.remove()
    assert len(model[1]._forward_hooks) == 0
    s = dict(zip(ACTIVATION_STATS, recorder.stats["1"].tolist(), strict=True))
    assert s["dead"] == pytest.approx(0.5)
    assert s["zero"] == pytest.approx(0.5)
    assert s["mean"] == pytest.approx((2 + 4 + 3 + 7) / 8)
    assert recorder.hists["1"][:8].sum() == 8


def test_recorder_names_repeated_calls() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(self.act(x)))

    model = Shared()
    recorder = ActivationRecorder(select_modules(model))
    recorder.attach()
    recorder.attach()  # idempotent
    assert len(model.act._forward_hooks) == 1
    model(torch.randn(4, 3))
    recorder.remove()
    assert list(recorder.stats) == ["act", "act:1"]


def test_select_modules_and_params() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    assert [(n, k) for n, _, k in select_modules(model)] == [("1", "tanh")]
    assert [(n, k) for n, _, k in select_modules(model, r"^[02]$")] == [("0", "other"), ("2", "other")]
    assert [n for n, _ in select_params(model)] == ["0.weight", "2.weight"]
    assert len(select_params(model, "all")) == 4
    assert [n for n, _ in select_params(model, r"bias")] == ["0.bias", "2.bias"]


def test_loss_noise() -> None:
    # a pure trend is not noise
    assert loss_noise([float(v) for v in range(10, 0, -1)]) == pytest.approx(0.0, abs=1e-12)
    losses = [1.0, 3.0] * 10
    x = np.arange(20)
    resid = np.array(losses) - np.polyval(np.polyfit(x, losses, 1), x)
    assert loss_noise(losses) == pytest.approx(resid.std() / 2.0)
    assert math.isnan(loss_noise([1.0, 2.0]))


def test_not_decreasing_and_overfitting_golden() -> None:
    assert not_decreasing([2.3] * 10, [2.3] * 5)
    assert not not_decreasing([2.3] * 10, [1.0] * 5)
    assert not_decreasing([2.3], [2.29], min_decrease=0.01)
    assert not not_decreasing([], [1.0])
    train = [2.0, 1.5, 1.2, 1.0, 0.8]
    assert overfitting(train, [1.9, 1.6, 1.7, 1.8, 1.9], patience=3)
    assert not overfitting(train, [1.9, 1.6, 1.7, 1.8, 1.9], patience=4)
    assert not overfitting(train, [1.9, 1.6, 1.5, 1.4, 1.3], patience=1)  # still improving
    assert not overfitting([2.0, 1.5, 1.6, 1.7, 1.8], [1.9, 1.6, 1.7, 1.8, 1.9], patience=3)  # train rises too
    # A one-cycle warmup: the LR still rises after the best evaluation, so the rise is the schedule's ...
    assert not overfitting(train, [1.9, 1.6, 1.7, 1.8, 1.9], patience=3, lrs=[0.1, 0.2, 0.4, 0.7, 1.0])
    # ... and once it is back below the LR at the best evaluation, the same losses are overfitting.
    assert overfitting(train, [1.9, 1.6, 1.7, 1.8, 1.9], patience=3, lrs=[0.1, 0.5, 1.0, 0.7, 0.4])
    assert overfitting(train, [1.9, 1.6, 1.7, 1.8, 1.9], patience=3, lrs=[1e-3] * 5)  # a constant LR changes nothing


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: activation_stats(torch.ones(2), "softmax"), r"kind='softmax'"),
        (lambda: activation_stats(torch.ones(2), "tanh", tol=0.6), r"tol=0.6"),
        (lambda: histogram(torch.ones(2), bins=0), r"bins=0"),
        (lambda: update_ratios([torch.ones(2)], []), r"1 tensors before and 0 after"),
        (lambda: update_ratios([torch.ones(2)], [torch.ones(3)]), r"shapes \(2,\) and \(3,\)"),
        (lambda: overfitting([1.0], [1.0], patience=0), r"patience=0"),
        (lambda: overfitting([1.0], [1.0, 2.0]), r"1 train and 2 val"),
        (lambda: overfitting([1.0, 2.0], [1.0, 2.0], lrs=[0.1]), r"2 train and 2 val losses and 1 LRs"),
        (lambda: select_modules(nn.ReLU(), "("), r"layers='\('"),
        (lambda: select_params(nn.Linear(1, 1), "["), r"params='\['"),
        (lambda: ActivationRecorder([], bins=-1), r"bins=-1"),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
