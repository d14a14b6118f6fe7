"""``SnapshotEnsemble``: snapshots at cycle ends with the LR at its minimum, per-group ratios kept, the ensemble
metrics against an oracle (mean of the snapshots' softmax), keep_last, BatchNorm recomputation, exact resume."""

from __future__ import annotations

import math
import pickle
from functools import partial
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.callbacks.snapshot import SnapshotEnsemble
from lightkit.models.classifier import ImageClassifier
from tests.helpers.tiny_fit import (
    Crash,
    WeightRecorder,
    assert_states_close,
    tiny_fit,
    tiny_loader,
    tiny_model,
    tiny_trainer,
)


def _discriminative_sgd(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    # head 10x the encoder's LR: the callback must keep that ratio at every step
    return torch.optim.SGD([{**g, "lr": 0.1 if g["group"] == "head" else 0.01} for g in groups], lr=0.01, momentum=0.9)


def _oracle(paths: list[str], batches: int = 2) -> tuple[float, float]:
    """Accuracy and NLL of the mean softmax of the snapshot files, each loaded into a fresh model."""
    x, y = (torch.cat(t) for t in zip(*list(tiny_loader(8, 4, seed=1))[:batches], strict=True))
    probs = []
    for path in paths:
        member = ImageClassifier.load_from_checkpoint(path, map_location="cpu").eval()
        with torch.no_grad():
            probs.append(member(x).softmax(1))
    mean = torch.stack(probs).mean(0)
    return float((mean.argmax(1) == y).float().mean()), float(-mean.gather(1, y.view(-1, 1)).log().mean())


def test_snapshots_at_cycle_ends_with_minimum_lr_and_ensemble_oracle(tmp_path: Any) -> None:
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1, optimizer=_discriminative_sgd)
    snap, recorder = SnapshotEnsemble(cycles=3, final_factor=0.05), WeightRecorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    trainer = tiny_fit(model, [snap, recorder, ckpt], tmp_path, max_steps=9, limit_val_batches=2,
                       enable_checkpointing=True)

    files = sorted((tmp_path / "snapshots").glob("snapshot_*.pt"))
    assert [f.name for f in files] == ["snapshot_1.pt", "snapshot_2.pt", "snapshot_3.pt"]
    assert snap.snapshots == [str(f) for f in files] and snap.cycles_written == [1, 2, 3]
    head = [i for i, g in enumerate(trainer.optimizers[0].param_groups) if g["group"] == "head"][0]
    for lrs in recorder.lrs:  # discriminative ratios kept at every step
        assert lrs[head] / lrs[0] == pytest.approx(10.0)
    for k, f in enumerate(files, start=1):
        meta = torch.load(f, weights_only=False)
        step = meta["snapshot"]["global_step"]
        assert step == 3 * k  # the end of cycle k
        cycle_lrs = [lrs[head] for lrs in recorder.lrs[step - 3: step]]
        assert cycle_lrs[0] == pytest.approx(0.1)  # restart at the base LR
        assert meta["snapshot"]["lr"][head] == min(cycle_lrs) == cycle_lrs[-1]  # minimum at the cycle's end
        assert meta["snapshot"]["lr"][head] == pytest.approx(
            0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(2 * math.pi / 3))))
        assert_states_close(meta["state_dict"], recorder.states[step - 1])

    acc, nll = _oracle(snap.snapshots)
    assert float(trainer.callback_metrics["snapshot/ensemble_nll"]) == pytest.approx(nll, rel=1e-5)
    assert float(trainer.callback_metrics["snapshot/ensemble_acc"]) == pytest.approx(acc)
    assert float(trainer.callback_metrics["snapshot/count"]) == 3
    # Testing an early checkpoint (it lists one snapshot) still uses this run's three.
    early = tmp_path / "ck" / "step=3.ckpt"
    out = trainer.test(model, tiny_loader(8, 4, seed=1), ckpt_path=str(early), verbose=False)[0]
    assert out["snapshot/test_ensemble_nll"] == pytest.approx(nll, rel=1e-5)
    assert_states_close(model.state_dict(), torch.load(early, weights_only=False)["state_dict"])  # restored
    fresh = SnapshotEnsemble(cycles=3)  # a new instance (another process) takes the checkpoint's list
    tiny_trainer(tmp_path, [fresh]).test(model, tiny_loader(8, 4, seed=1), ckpt_path=str(early), verbose=False)
    assert fresh.snapshots == snap.snapshots[:1]


def test_keep_last_and_recompute_bn(tmp_path: Any) -> None:
    plain_model, plain = tiny_model(), SnapshotEnsemble(cycles=2, dirpath=str(tmp_path / "plain"))
    tiny_fit(plain_model, [plain], tmp_path, max_steps=6, limit_val_batches=0)
    model = tiny_model()
    snap = SnapshotEnsemble(cycles=2, keep_last=1, recompute_bn=True, bn_batches=2, dirpath=str(tmp_path / "bn"))
    tiny_fit(model, [snap], tmp_path, max_steps=6, limit_val_batches=0)

    assert sorted(p.name for p in (tmp_path / "bn").iterdir()) == ["snapshot_2.pt"]
    assert snap.snapshots == [str(tmp_path / "bn" / "snapshot_2.pt")] and snap.cycles_written == [1, 2]
    assert_states_close(model.state_dict(), plain_model.state_dict())  # training itself is unaffected
    with_bn = torch.load(tmp_path / "bn" / "snapshot_2.pt", weights_only=False)
    without = torch.load(tmp_path / "plain" / "snapshot_2.pt", weights_only=False)
    assert with_bn["snapshot"]["bn_recomputed"] and not without["snapshot"]["bn_recomputed"]
    for key, value in without["state_dict"].items():
        if "running_" in key:
            assert not torch.allclose(with_bn["state_dict"][key], value), key
        elif "num_batches" not in key:
            assert torch.equal(with_bn["state_dict"][key], value), key


def test_resume_in_cycle_three_knows_snapshots_one_and_two(tmp_path: Any) -> None:
    straight_model, straight, straight_rec = (tiny_model(), SnapshotEnsemble(3, dirpath=str(tmp_path / "a")),
                                              WeightRecorder())
    tiny_fit(straight_model, [straight, straight_rec], tmp_path, max_steps=9, limit_val_batches=0)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=6, filename="{step}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_fit(tiny_model(), [SnapshotEnsemble(3, dirpath=str(tmp_path / "b")), ckpt, Crash(7)], tmp_path,
                 max_steps=9, limit_val_batches=0, enable_checkpointing=True)
    state = torch.load(tmp_path / "ck" / "step=6.ckpt", weights_only=False)["callbacks"]
    (snap_state,) = [v for k, v in state.items() if k.startswith("SnapshotEnsemble")]
    assert snap_state["cycles_written"] == [1, 2] and len(snap_state["snapshots"]) == 2

    resumed_model, resumed, rec = tiny_model(), SnapshotEnsemble(3, dirpath=str(tmp_path / "b")), WeightRecorder()
    tiny_fit(resumed_model, [resumed, rec], tmp_path, max_steps=9, limit_val_batches=0,
             ckpt_path=str(tmp_path / "ck" / "step=6.ckpt"))
    assert resumed.cycles_written == [1, 2, 3] and resumed.snapshots[-1].endswith("snapshot_3.pt")
    assert rec.lrs == straight_rec.lrs[6:]
    for name in ("snapshot_1.pt", "snapshot_3.pt"):
        a = torch.load(tmp_path / "a" / name, weights_only=False)["state_dict"]
        b = torch.load(tmp_path / "b" / name, weights_only=False)["state_dict"]
        assert_states_close(a, b)


def test_state_round_trip_and_pickle() -> None:
    snap = SnapshotEnsemble(cycles=2)
    snap.load_state_dict({"snapshots": ["a.pt"], "cycles_written": [1], "dirpath": "d"})
    assert snap.state_dict() == {"snapshots": ["a.pt"], "cycles_written": [1], "dirpath": "d"}
    assert pickle.loads(pickle.dumps(snap)).snapshots == ["a.pt"]


def test_raises(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="SnapshotEnsemble: cycles=0 must be >= 1"):
        SnapshotEnsemble(cycles=0)
    with pytest.raises(ValueError, match=r"SnapshotEnsemble: final_factor=1.0 must be in \[0, 1\)"):
        SnapshotEnsemble(final_factor=1.0)
    with pytest.raises(ValueError, match="SnapshotEnsemble: keep_last=0 must be >= 1"):
        SnapshotEnsemble(keep_last=0)
    with pytest.raises(ValueError, match="SnapshotEnsemble: bn_batches=0 must be >= 1"):
        SnapshotEnsemble(bn_batches=0)
    scheduled = tiny_model(lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    with pytest.raises(ValueError,
                       match=r"SnapshotEnsemble: the module also configures LR scheduler\(s\) \['StepLR'\]"):
        tiny_fit(scheduled, [SnapshotEnsemble(cycles=2)], tmp_path, max_steps=2)
    with pytest.raises(ValueError, match="SnapshotEnsemble: snapshot_boundaries: total_steps=2 < cycles=3"):
        tiny_fit(tiny_model(), [SnapshotEnsemble(cycles=3)], tmp_path, max_steps=2)
