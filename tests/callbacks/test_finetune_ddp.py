"""``FineTune`` under 2-process CPU DDP: ranks stay identical across the unfreeze; plain DDP is refused."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

SETUP = '''
import functools
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset
from lightkit.callbacks.finetune import FineTune
from lightkit.models import ImageClassifier
seed_everything(0)
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 4, (32,), generator=g))
model = ImageClassifier(encoder="test_resnet", num_classes=4,
                        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.05))
init = {k: v.clone() for k, v in model.state_dict().items()}

def trainer_for(strategy, callbacks, max_steps=5):
    return Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=max_steps, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=OUT, callbacks=callbacks)
'''


def test_ddp_ranks_identical_after_unfreeze_and_at_end(tmp_path) -> None:
    run_ddp_script(tmp_path, SETUP + '''
class Snap(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in (2, 3):  # at the unfreeze, and after the first step with everything trainable
            self.__dict__[f"s{trainer.global_step}"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

cb, snap = FineTune("freeze_unfreeze", unfreeze_at=2, unit="step"), Snap()
trainer = trainer_for("ddp_find_unused_parameters_true", [cb, snap])
trainer.fit(model, DataLoader(data, batch_size=4))
save_rank({"init": init, "s2": snap.s2, "s3": snap.s3, "end": model.state_dict(), "phase": cb.phase,
           "world": trainer.world_size, "step": trainer.global_step})
''')
    r0, r1 = load_ranks(tmp_path)
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 5 and r0["phase"] == r1["phase"] == 1
    for key, value in r0["init"].items():
        if not value.is_floating_point():
            continue
        if key.startswith("encoder."):  # frozen for steps 0-1 on both ranks, BN statistics included
            assert torch.equal(r0["s2"][key], value) and torch.equal(r1["s2"][key], value), key
        if "running" not in key:  # BN running stats are per rank in plain DDP; weights must agree
            for when in ("s3", "end"):
                assert torch.equal(r0[when][key], r1[when][key]), (when, key)
        assert not torch.equal(r0["end"][key], value), key  # everything trained after the unfreeze


def test_ddp_without_find_unused_parameters_is_refused(tmp_path) -> None:
    run_ddp_script(tmp_path, SETUP + '''
try:
    trainer_for("ddp", [FineTune("gradual", unfreeze_at=2, unit="step")]).fit(model, DataLoader(data, batch_size=4))
    save_rank("no error")
except ValueError as err:
    save_rank(str(err))
''')
    message = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert "find_unused_parameters=True" in message and "ddp_find_unused_parameters_true" in message
