"""``SWA``: the running mean from the start fraction on, BatchNorm recomputed at the end (oracle: torch
update_bn)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim.swa_utils import update_bn

from lightkit.callbacks.swa import SWA
from tests.helpers.tiny_fit import (
    Crash,
    WeightRecorder,
    assert_states_close,
    tiny_fit,
    tiny_loader,
    tiny_model,
)


def test_swa_mean_and_bn_recompute(tmp_path: Any) -> None:
    model, recorder, swa = tiny_model(), WeightRecorder(), SWA(start=0.5, update_bn=True)
    trainer = tiny_fit(model, [recorder, swa], tmp_path, max_steps=6, limit_val_batches=1)
    assert swa.start_step == 3 and swa.num_averaged == 3
    seen = recorder.states[3:]
    oracle = tiny_model()
    oracle.load_state_dict(
        {
            k: torch.stack([s[k] for s in seen]).float().mean(0).to(v.dtype)
            if v.is_floating_point()
            else seen[-1][k]
            for k, v in seen[0].items()
        }
    )
    update_bn(tiny_loader(), oracle)
    for key, value in oracle.state_dict().items():
        if "num_batches" not in key:
            torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    assert "swa/raw_val_loss" in trainer.callback_metrics


def test_raises() -> None:
    with pytest.raises(ValueError, match=r"SWA: start=1.0 must be a fraction of training in \[0, 1\)"):
        SWA(start=1.0)
    with pytest.raises(ValueError, match="SWA: every_n_steps=0 must be >= 1"):
        SWA(every_n_steps=0)
    with pytest.raises(ValueError, match="SWA: bn_batches=0 must be >= 1"):
        SWA(bn_batches=0)
    with pytest.raises(ValueError, match="SWA: validate_with='x' is not one of"):
        SWA(validate_with="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("crash", "saved"), [(4, 3), (8, 6)], ids=["before_averaging", "while_averaging"])
def test_crash_and_resume_matches_a_straight_run(crash: int, saved: int, tmp_path: Any) -> None:
    """Averaging starts at step 4 of 9 (3 steps per epoch); a crash before it or in the middle of it,
    resumed from the last checkpoint (at an epoch's end: Lightning replays a mid-epoch resume's epoch),
    ends with the same average, raw weights, count and recomputed BN statistics."""
    straight_model, straight = tiny_model(), SWA(start=0.5)
    tiny_fit(straight_model, [straight], tmp_path / "straight", max_steps=9)
    assert straight.start_step == 4 and straight.num_averaged == 5

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_fit(tiny_model(), [SWA(start=0.5), ckpt, Crash(crash)], tmp_path / "first", max_steps=9,
                 enable_checkpointing=True)
    path = tmp_path / "ck" / f"step={saved}.ckpt"
    assert torch.load(path, weights_only=False)["weight_averaging"]["num_averaged"] == max(0, saved - 4)

    resumed_model, resumed = tiny_model(), SWA(start=0.5)
    tiny_fit(resumed_model, [resumed], tmp_path / "resumed", ckpt_path=str(path), max_steps=9)
    assert resumed.num_averaged == straight.num_averaged and resumed.start_step == straight.start_step
    assert_states_close(resumed.raw_state_dict(resumed_model), straight.raw_state_dict(straight_model))
    assert_states_close(resumed_model.state_dict(), straight_model.state_dict())  # the average, BN recomputed
