"""Multi-task loss weighting and the soft-sharing penalty against hand computation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lightkit.functional.multitask import (
    dwa_weights,
    fixed_weighted_loss,
    soft_sharing_penalty,
    uncertainty_weighted_loss,
    uncertainty_weights,
)


def test_fixed_weighted_loss() -> None:
    out = fixed_weighted_loss(torch.tensor([0.5, 2.0, 3.0]), torch.tensor([1.0, 0.25, 0.0]))
    assert float(out) == pytest.approx(0.5 + 0.5)
    with pytest.raises(ValueError, match=r"losses \(3,\) and weights \(2,\) differ in shape"):
        fixed_weighted_loss(torch.ones(3), torch.ones(2))


def test_uncertainty_formula_by_hand() -> None:
    losses = torch.tensor([0.7, 2.0, 0.3])
    log_vars = torch.tensor([0.3, -0.5, 1.2])  # s = log sigma^2
    kinds = ["classification", "regression", "classification"]
    sigma = [math.exp(s / 2) for s in (0.3, -0.5, 1.2)]
    # classification: 1/sigma^2 L + log sigma; regression: 1/(2 sigma^2) L + log sigma
    expected = (0.7 / sigma[0] ** 2 + math.log(sigma[0]) + 2.0 / (2 * sigma[1] ** 2) + math.log(sigma[1])
                + 0.3 / sigma[2] ** 2 + math.log(sigma[2]))
    assert float(uncertainty_weighted_loss(losses, log_vars, kinds)) == pytest.approx(expected, rel=1e-6)
    weights = uncertainty_weights(log_vars, kinds)
    assert weights.tolist() == pytest.approx([1 / sigma[0] ** 2, 1 / (2 * sigma[1] ** 2), 1 / sigma[2] ** 2], rel=1e-6)


def test_uncertainty_gradient_reaches_log_vars_and_optimum() -> None:
    log_vars = torch.zeros(2, requires_grad=True)
    uncertainty_weighted_loss(torch.tensor([0.8, 0.2]), log_vars, ["classification", "regression"]).backward()
    # d/ds (e^-s L + s/2) = -L + 1/2 at s=0; d/ds (e^-s L/2 + s/2) = -L/2 + 1/2
    assert log_vars.grad.tolist() == pytest.approx([-0.8 + 0.5, -0.1 + 0.5])


def test_uncertainty_errors() -> None:
    with pytest.raises(ValueError, match=r"kind 'ranking' is not one of \['classification', 'regression'\]"):
        uncertainty_weighted_loss(torch.ones(1), torch.zeros(1), ["ranking"])
    with pytest.raises(ValueError, match="1 kinds for 2 losses"):
        uncertainty_weights(torch.zeros(2), ["regression"])
    with pytest.raises(ValueError, match=r"losses \(2,\) and log_vars \(3,\) differ in shape"):
        uncertainty_weighted_loss(torch.ones(2), torch.zeros(3), ["regression"] * 2)


def test_dwa_weights_by_hand() -> None:
    assert dwa_weights(torch.zeros(0, 3)).tolist() == [1.0, 1.0, 1.0]
    assert dwa_weights(torch.tensor([[1.0, 2.0]])).tolist() == [1.0, 1.0]
    history = torch.tensor([[9.0, 9.0], [2.0, 1.0], [1.0, 1.0]])  # only the last two rows count
    r = [1.0 / 2.0, 1.0 / 1.0]
    z = [math.exp(v / 2.0) for v in r]
    expected = [2 * v / sum(z) for v in z]
    out = dwa_weights(history, temperature=2.0)
    assert out.tolist() == pytest.approx(expected, rel=1e-6) and float(out.sum()) == pytest.approx(2.0)
    assert out[1] > out[0]  # the task whose loss stalled gets more weight
    flat = dwa_weights(history, temperature=1e6)
    assert flat.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        dwa_weights(history, temperature=0)
    with pytest.raises(ValueError, match=r"history has shape \(3,\); give \(epochs, tasks\)"):
        dwa_weights(torch.ones(3))


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def test_soft_sharing_penalty_zero_then_quadratic() -> None:
    a = _net()
    b = copy.deepcopy(a)
    assert _value(soft_sharing_penalty([a, b])) == 0.0
    assert _value(soft_sharing_penalty([a, b, copy.deepcopy(a)])) == 0.0
    direction = [torch.randn_like(p) for p in b.parameters()]
    norm2 = sum(float(d.pow(2).sum()) for d in direction)
    values = []
    for eps in (0.1, 0.2, 0.4):
        c = copy.deepcopy(a)
        with torch.no_grad():
            for p, d in zip(c.parameters(), direction, strict=True):
                p.add_(eps * d)
        values.append(_value(soft_sharing_penalty([a, c])))
        assert values[-1] == pytest.approx(eps**2 * norm2, rel=1e-4)
        # three encoders: pairs (a, a') = 0, (a, c) and (a', c) each eps^2 |d|^2
        assert _value(soft_sharing_penalty([a, copy.deepcopy(a), c])) == pytest.approx(2 * eps**2 * norm2, rel=1e-4)
    assert values[0] < values[1] < values[2]


def test_soft_sharing_penalty_gradient_and_errors() -> None:
    a, b = _net(), _net()
    with torch.no_grad():
        next(b.parameters()).add_(1.0)
    soft_sharing_penalty([a, b]).backward()
    wa, wb = next(a.parameters()), next(b.parameters())
    torch.testing.assert_close(wa.grad, 2 * (wa - wb).detach())
    torch.testing.assert_close(wb.grad, -wa.grad)
    with pytest.raises(ValueError, match="got 1 module"):
        soft_sharing_penalty([a])
    with pytest.raises(ValueError, match="module 1 has other parameters than module 0"):
        soft_sharing_penalty([a, nn.Linear(2, 2)])
