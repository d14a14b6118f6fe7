"""``SWA``: the running mean from the start fraction on, BatchNorm recomputed at the end (oracle: torch update_bn)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.optim.swa_utils import update_bn

from lightkit.callbacks.swa import SWA
from tests.helpers.tiny_fit import WeightRecorder, tiny_fit, tiny_loader, tiny_model


def test_swa_mean_and_bn_recompute(tmp_path: Any) -> None:
    model, recorder, swa = tiny_model(), WeightRecorder(), SWA(start=0.5, update_bn=True)
    trainer = tiny_fit(model, [recorder, swa], tmp_path, max_steps=6, limit_val_batches=1)
    assert swa.start_step == 3 and swa.num_averaged == 3
    seen = recorder.states[3:]
    oracle = tiny_model()
    oracle.load_state_dict({k: torch.stack([s[k] for s in seen]).float().mean(0).to(v.dtype) if v.is_floating_point()
                            else seen[-1][k] for k, v in seen[0].items()})
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
