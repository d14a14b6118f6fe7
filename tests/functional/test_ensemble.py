"""Ensemble functions: mean softmax, metrics, members loaded one at a time (oracle), the snapshot LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightkit.functional.ensemble import (
    average_probs,
    calibration_error,
    classification_metrics,
    member_probs,
    snapshot_boundaries,
    snapshot_lr_factor,
)


def test_average_probs_and_metrics() -> None:
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    b = torch.tensor([[0.5, 0.5], [0.6, 0.4]])
    mean = average_probs([a, b])
    torch.testing.assert_close(mean, torch.tensor([[0.7, 0.3], [0.4, 0.6]]))
    m = classification_metrics(mean, torch.tensor([0, 0]))
    assert m["acc"] == 0.5
    assert m["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)
    # ECE, 15 bins: sample 1 (conf 0.7, right) and sample 2 (conf 0.6, wrong) in different bins.
    assert calibration_error(mean, torch.tensor([0, 0])) == pytest.approx(0.5 * 0.3 + 0.5 * 0.6)


def test_member_probs_oracle_and_restores_weights(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    members = [nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).eval() for _ in range(3)]
    torch.save({"state_dict": members[1].state_dict()}, tmp_path / "m1.pt")
    batches = [(torch.randn(5, 4), torch.zeros(5)), (torch.randn(2, 4), torch.zeros(2))]
    got = member_probs(model, [members[0].state_dict(), str(tmp_path / "m1.pt"), members[2].state_dict()], batches)
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        oracle = torch.stack([m(x).softmax(1) for m in members])
    torch.testing.assert_close(got, oracle)
    torch.testing.assert_close(average_probs(list(got)), oracle.mean(0))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_snapshot_schedule_golden() -> None:
    assert snapshot_boundaries(10, 3) == [3, 6, 10]
    factors = [snapshot_lr_factor(t, 10, 3) for t in range(11)]
    assert factors[0] == factors[3] == factors[6] == 1.0  # restarts
    assert factors[2] == pytest.approx(0.25) and factors[5] == pytest.approx(0.25)  # 0.5 (1 + cos(2 pi / 3))
    assert factors[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))
    # within each cycle the factor falls monotonically, so the cycle's last step has the smallest LR
    for start, end in ((0, 3), (3, 6), (6, 10)):
        cycle = factors[start:end]
        assert cycle == sorted(cycle, reverse=True) and min(cycle) == cycle[-1]
    assert snapshot_lr_factor(3, 6, 2, final_factor=0.1) == 1.0
    assert snapshot_lr_factor(50, 10, 2) == 0.0  # holds past the end


def test_raises() -> None:
    with pytest.raises(ValueError, match="average_probs: got no members"):
        average_probs([])
    with pytest.raises(ValueError, match="average_probs: members have different shapes"):
        average_probs([torch.zeros(2, 3), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match=r"classification_metrics: probs \(2, 3\) and target \(3,\)"):
        classification_metrics(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="calibration_error: bins=0"):
        calibration_error(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), bins=0)
    with pytest.raises(ValueError, match="member_probs: got no members"):
        member_probs(nn.Linear(2, 2), [], [])
    with pytest.raises(ValueError, match="snapshot_boundaries: cycles=0"):
        snapshot_boundaries(10, 0)
    with pytest.raises(ValueError, match="snapshot_boundaries: total_steps=2 < cycles=3"):
        snapshot_boundaries(2, 3)
    with pytest.raises(ValueError, match="snapshot_lr_factor: step=-1"):
        snapshot_lr_factor(-1, 10, 2)
