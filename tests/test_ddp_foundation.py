"""2-process CPU DDP fit of the ImageClassifier on real digits: both ranks end with identical weights."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_ddp_fit_ranks_identical(tmp_path) -> None:
    run_ddp_script(tmp_path, '''
        from lightkit.data import DigitsDataModule
        from lightkit.models import ImageClassifier
        seed_everything(0)
        dm = DigitsDataModule(batch_size=32, image_size=32)
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
        trainer = ddp_trainer(max_steps=3, limit_val_batches=2)
        trainer.fit(model, datamodule=dm)
        save_rank({"state": {k: v.clone() for k, v in model.state_dict().items()},
                   "world": trainer.world_size, "step": trainer.global_step})
    ''')
    r0, r1 = load_ranks(tmp_path)
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 3
    for key, value in r0["state"].items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(value, r1["state"][key]), key
