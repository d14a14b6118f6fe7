"""2-process CPU DDP: ranks hold identical EMA / SWA weights and snapshot lists; the snapshot files (rank zero)
equal every rank's weights at the cycle end."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.ddp import load_ranks, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

_SETUP = '''
from lightkit.callbacks.ema import EMA
from lightkit.callbacks.snapshot import SnapshotEnsemble
from lightkit.callbacks.swa import SWA
from lightkit.data import DigitsDataModule
from lightkit.models import ImageClassifier
seed_everything(0)
dm = DigitsDataModule(batch_size=32, image_size=32)
model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
'''


def _params(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # BatchNorm running statistics are per rank under DDP (each rank normalises its own batches)
    return {k: v for k, v in state.items() if v.is_floating_point() and "running" not in k}


def test_ddp_ema_and_snapshots_identical_on_ranks(tmp_path) -> None:
    run_ddp_script(tmp_path, _SETUP + '''
ema, snap = EMA(decay=0.9), SnapshotEnsemble(cycles=2, dirpath=os.path.join(OUT, "snaps"))
trainer = ddp_trainer(max_steps=4, limit_train_batches=2, limit_val_batches=2, callbacks=[ema, snap])
trainer.fit(model, datamodule=dm)
save_rank({"average": {k: v.clone() for k, v in model.state_dict().items()},
           "raw": {k: v.clone() for k, v in ema.raw_state_dict(model).items()},
           "snapshots": list(snap.snapshots), "num_averaged": ema.num_averaged,
           "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}})
''')
    r0, r1 = load_ranks(tmp_path)
    assert r0["snapshots"] == r1["snapshots"] and len(r0["snapshots"]) == 2
    assert r0["num_averaged"] == r1["num_averaged"] == 4
    for key in ("snapshot/ensemble_acc", "snapshot/ensemble_nll", "ema/raw_val_acc"):
        assert r0["metrics"][key] == r1["metrics"][key], key
    last = torch.load(r0["snapshots"][-1], weights_only=False)["state_dict"]
    for name, state in _params(r0["average"]).items():
        assert torch.equal(state, r1["average"][name]), name
    for name, state in _params(r0["raw"]).items():
        assert torch.equal(state, r1["raw"][name]), name
        assert torch.equal(state, last[name]), name  # snapshot 2 = the weights at the end of cycle 2


def test_ddp_swa_bn_recompute_identical_on_ranks(tmp_path) -> None:
    run_ddp_script(tmp_path, _SETUP + '''
swa = SWA(start=0.5, bn_batches=3)
trainer = ddp_trainer(max_steps=4, limit_val_batches=1, callbacks=[swa])
trainer.fit(model, datamodule=dm)
save_rank({k: v.clone() for k, v in model.state_dict().items()})
''')
    r0, r1 = load_ranks(tmp_path)
    for name, value in r0.items():
        if value.is_floating_point():  # running statistics included: averaged over the ranks after update_bn
            torch.testing.assert_close(value, r1[name], msg=name)
