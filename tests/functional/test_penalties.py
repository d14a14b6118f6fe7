"""l1_penalty: value, gradient sign(w), empty input."""

from __future__ import annotations

import torch

from lightkit.functional.penalties import l1_penalty


def test_value_and_gradient() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    b = torch.tensor([-3.0], requires_grad=True)
    penalty = l1_penalty([w, b])
    assert penalty.item() == 6.5 and penalty.ndim == 0
    penalty.backward()
    torch.testing.assert_close(w.grad, torch.tensor([[1.0, -1.0], [1.0, 0.0]]))
    torch.testing.assert_close(b.grad, torch.tensor([-1.0]))


def test_empty_and_generator() -> None:
    assert l1_penalty([]).item() == 0.0
    assert l1_penalty(p for p in [torch.ones(3)]).item() == 3.0
