"""Pure fine-tuning helpers: geometric LR spreads, grouping by module names / regexes, phases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightkit.functional.groups import (
    PhaseSchedule,
    batchnorm_modules,
    compile_patterns,
    geometric_lrs,
    group_by_modules,
    owners,
    phase_bounds,
    trainable_groups,
)
from lightkit.functional.schedules import cosine, one_cycle


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.classifier = nn.Linear(4, 2)


def test_geometric_lrs_golden() -> None:
    # fastai slice(1e-5, 1e-3) over 3 groups: 1e-5, 1e-4, 1e-3.
    assert geometric_lrs(1e-5, 1e-3, 3) == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-12)
    assert geometric_lrs(1e-4, 1e-2, 5) == pytest.approx([1e-4, 10**-3.5, 1e-3, 10**-2.5, 1e-2], rel=1e-12)
    assert geometric_lrs(1e-3, 1e-3, 4) == pytest.approx([1e-3] * 4)
    assert geometric_lrs(1e-5, 1e-3, 1) == [1e-3]


@pytest.mark.parametrize(("args", "match"),
                         [((0.0, 1e-3, 3), "lo=0.0"), ((1e-2, 1e-3, 3), "hi=0.001"), ((1e-4, 1e-3, 0), "n=0")])
def test_geometric_lrs_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        geometric_lrs(*args)


def test_group_by_modules_names_and_regexes() -> None:
    model = Tiny()
    groups = group_by_modules(model, {"low": [r"features\.[01]"], "high": [r"features\.[23]"], "head": ["classifier"]})
    assert [n for n, _ in groups] == ["low", "high", "head"]
    assert [p for p, _ in groups[0][1]] == ["features.0.weight", "features.0.bias", "features.1.weight",
                                            "features.1.bias"]
    assert [p for p, _ in groups[2][1]] == ["classifier.weight", "classifier.bias"]
    bns = batchnorm_modules(model, groups)
    assert bns["low"] == [model.features[1]] and bns["high"] == [model.features[3]] and bns["head"] == []


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ({}, "names no group"),
        ({"a": []}, "non-empty list"),
        ({"a": "features"}, "non-empty list"),
        ({"a": ["features(["]}, "not a valid regex"),
    ],
)
def test_compile_patterns_errors(groups: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_patterns(groups)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ({"a": ["backbone"]}, r"groups\['a'\]=\['backbone'\] selects no parameter of Tiny.*features"),
        ({"a": ["features"], "b": [r"features\.0"]}, "selected by both 'a' and 'b'"),
    ],
)
def test_group_by_modules_errors(groups: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        group_by_modules(Tiny(), groups)


def test_owners_whole_mixed_and_unassigned() -> None:
    model = Tiny()
    groups = group_by_modules(model, {"features": ["features"]})
    pgs = [{"params": list(model.features.parameters())}, {"params": list(model.classifier.parameters())},
           {"params": list(model.parameters())}]
    assert owners(pgs, groups) == [{"features"}, {None}, {"features", None}]


@pytest.mark.parametrize(
    ("strategy", "phase", "expected"),
    [
        ("no_freeze", 0, ["a", "b", "c", "d"]),
        ("freeze", 0, ["d"]),
        ("freeze_unfreeze", 0, ["d"]),
        ("freeze_unfreeze", 1, ["a", "b", "c", "d"]),
        ("gradual", 0, ["d"]),
        ("gradual", 2, ["b", "c", "d"]),
        ("gradual", 7, ["a", "b", "c", "d"]),
    ],
)
def test_trainable_groups(strategy: str, phase: int, expected: list[str]) -> None:
    assert trainable_groups(strategy, ["a", "b", "c", "d"], phase) == expected


def test_trainable_groups_error() -> None:
    with pytest.raises(ValueError, match="strategy='thaw'"):
        trainable_groups("thaw", ["a"], 0)


def test_phase_bounds() -> None:
    assert phase_bounds([3, 7], 12) == [(0, 3), (3, 4), (7, 5)]
    assert phase_bounds([], 5) == [(0, 5)]
    assert phase_bounds([2], math.inf) == [(0, 2), (2, math.inf)]
    with pytest.raises(ValueError, match=r"milestones=\[3, 3\]"):
        phase_bounds([3, 3], 12)
    with pytest.raises(ValueError, match=r"milestones=\[12\]"):
        phase_bounds([12], 12)


def test_phase_schedule_factor_is_the_schedules_oracle() -> None:
    spec = PhaseSchedule(pct_start=0.4, div_factor=5.0)
    assert [spec.factor(t, 10) for t in range(10)] == [one_cycle(t, 10, 0.4, 5.0, 1e4) for t in range(10)]
    assert PhaseSchedule(shape="cosine").factor(3, 6) == cosine(3, 6)
    assert PhaseSchedule(shape="constant", lr_scale=2.0).factor(5, 6) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": "linear"}, "shape='linear'"),
        ({"lr_scale": 0.0}, "lr_scale=0.0"),
        ({"pct_start": 1.0}, "pct_start=1.0"),
        ({"div_factor": 0.5}, "div_factor=0.5"),
    ],
)
def test_phase_schedule_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PhaseSchedule(**kwargs)


def test_adamw_skips_params_without_grad() -> None:
    # Why freezing by requires_grad alone keeps frozen weights and optimizer state fixed: torch's AdamW
    # neither decays nor updates a parameter whose grad is None, even at a non-zero LR.
    a, b = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([a, b], lr=0.1, weight_decay=0.5)
    before = a.detach().clone()
    for _ in range(3):
        b.pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(a, before) and a not in opt.state and b in opt.state
