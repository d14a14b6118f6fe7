"""Golden values for the large-batch rule's pure functions (lightkit.functional.lr_scaling)."""

from __future__ import annotations

import math

import pytest
import torch

from lightkit.functional.lr_scaling import global_batch, lr_scale, scale_param_groups, warmup_factor


def test_global_batch_is_the_product() -> None:
    assert global_batch(32) == 32
    assert global_batch(32, 8) == 256
    assert global_batch(128, 2, 4, 2) == 2048


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 0}, r"batch_size=0 must be an int >= 1"),
    ({"batch_size": 32, "accumulate_grad_batches": 1.5}, r"accumulate_grad_batches=1.5"),
    ({"batch_size": 32, "devices": True}, r"devices=True"),
    ({"batch_size": 32, "num_nodes": -1}, r"num_nodes=-1"),
])
def test_global_batch_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        global_batch(**kwargs)


def test_lr_scale_rules() -> None:
    assert lr_scale(256, 32, "linear") == 8.0
    assert lr_scale(256, 32, "sqrt") == pytest.approx(math.sqrt(8.0))
    assert lr_scale(256, 32, "none") == 1.0
    assert lr_scale(16, 64, "linear") == 0.25  # a smaller batch scales down


@pytest.mark.parametrize(("args", "match"), [
    ((256, 32, "cubic"), r"rule='cubic' is not one of \['linear', 'sqrt', 'none'\]"),
    ((256, 0, "linear"), r"reference_batch=0 must be an int >= 1"),
    ((0, 32, "linear"), r"batch=0 must be an int >= 1"),
])
def test_lr_scale_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lr_scale(*args)


def test_warmup_factor_golden() -> None:
    # Goyal et al.: from the reference LR (1/k of the scaled one, k = 4) to the scaled LR in W = 4 steps.
    got = [warmup_factor(t, 4, 0.25) for t in range(7)]
    assert got == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0, 1.0], abs=1e-15)
    assert [warmup_factor(t, 2, 0.0) for t in range(3)] == [0.0, 0.5, 1.0]
    assert warmup_factor(5, 0, 0.1) == 1.0  # no warmup


@pytest.mark.parametrize(("args", "match"), [
    ((-1, 4, 0.5), r"step=-1 must be >= 0"),
    ((0, -2, 0.5), r"warmup_steps=-2 must be >= 0"),
    ((0, 4, 1.5), r"start=1.5 must be in \[0, 1\]"),
])
def test_warmup_factor_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        warmup_factor(*args)


def test_scale_param_groups_keeps_ratios_and_zero() -> None:
    groups = [{"lr": 0.01, "initial_lr": 0.01, "max_lr": 0.02, "min_lr": 1e-5, "weight_decay": 0.05},
              {"lr": 0.0, "initial_lr": 0.0}, {"lr": torch.tensor(0.1)}]
    scale_param_groups(groups, 8.0)
    assert groups[0] == pytest.approx({"lr": 0.08, "initial_lr": 0.08, "max_lr": 0.16, "min_lr": 8e-5,
                                       "weight_decay": 0.05})
    assert groups[1] == {"lr": 0.0, "initial_lr": 0.0}
    assert float(groups[2]["lr"]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"factor=0.0 must be finite and > 0"):
        scale_param_groups(groups, 0.0)
