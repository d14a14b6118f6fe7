"""2-process CPU DDP fits of the MultiTaskClassifier on digits: identical ranks, DWA weights agreed across ranks."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def test_multitask_ddp_ranks_identical(tmp_path) -> None:
    run_ddp_script(tmp_path, '''
        from lightkit.data.multitask import DigitsMultiTaskDataModule
        from lightkit.models.multitask import MultiTaskClassifier
        tasks = [{"name": "digit", "main": True}, {"name": "parity", "type": "binary"},
                 {"name": "ge5", "type": "binary"}, {"name": "angle", "type": "regression"}]
        out = {}
        for weighting, sharing in (("uncertainty", "soft"), ("dwa", "hard")):
            seed_everything(0)
            dm = DigitsMultiTaskDataModule(batch_size=16, image_size=16, samples_per_class=8)
            model = MultiTaskClassifier(tasks=tasks, encoder="test_resnet", num_classes=10, in_chans=1,
                                        weighting=weighting, sharing=sharing)
            trainer = ddp_trainer(max_steps=-1, max_epochs=3, limit_train_batches=2, limit_val_batches=1)
            trainer.fit(model, datamodule=dm)
            out[weighting] = {"state": {k: v.clone() for k, v in model.state_dict().items()},
                              "weights": model.task_weights(), "step": trainer.global_step,
                              "world": trainer.world_size}
        save_rank(out)
    ''')
    r0, r1 = load_ranks(tmp_path)
    for weighting in ("uncertainty", "dwa"):
        a, b = r0[weighting], r1[weighting]
        assert a["world"] == b["world"] == 2 and a["step"] == b["step"] == 6
        for key, value in a["state"].items():
            if value.is_floating_point() and "running" not in key:
                assert torch.equal(value, b["state"][key]), (weighting, key)
        assert torch.equal(a["weights"], b["weights"])
    assert not torch.equal(r0["uncertainty"]["state"]["log_vars"], torch.zeros(4))
    assert not torch.allclose(r0["dwa"]["weights"], torch.ones(4))  # epoch 2 used DWA weights, the same on both ranks
