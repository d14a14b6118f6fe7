"""LRScaling: the computed LR under accumulation, every schedule, FineTune, the LR range test, resume, errors.

The 2-process CPU DDP case runs as a subprocess (tests/helpers/ddp.py).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.callbacks import FineTune, LRRangeTest, LRScaling
from lightkit.functional.lr_scaling import warmup_factor
from lightkit.lr_schedulers import Cosine, OneCycle
from tests.helpers.ddp import load_ranks, run_ddp_script
from tests.helpers.tiny_fit import Crash, assert_states_close, tiny_fit, tiny_model


class StepLRs(Callback):
    """The LRs ``optimizer.step`` uses (listed after LRScaling) and the LRs between steps."""

    def __init__(self) -> None:
        self.stepped: list[list[float]] = []
        self.between: list[list[float]] = []

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self.stepped.append([float(g["lr"]) for g in optimizer.param_groups])

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.between.append([float(g["lr"]) for g in trainer.optimizers[0].param_groups])


def test_accumulation_scales_and_warms_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # batch 4 x accumulation 2 = 8 = 2 x reference 4: linear scale 2, warmup 2 steps from 1/2.
    rec = StepLRs()
    cb = LRScaling(rule="linear", reference_batch=4, warmup=2)
    with caplog.at_level(logging.INFO):
        tiny_fit(tiny_model(lr=0.05), [cb, rec], tmp_path, max_steps=4, accumulate_grad_batches=2)
    assert cb.applied == {"global_batch": 8, "scale": 2.0, "rule": "linear", "reference_batch": 4,
                          "warmup_steps": 2, "warmup_start": 0.5}
    expected = [0.1 * warmup_factor(t, 2, 0.5) for t in range(4)]
    assert [lrs[-1] for lrs in rec.stepped] == pytest.approx(expected)  # [0.05, 0.075, 0.1, 0.1]
    assert all(lrs == pytest.approx([0.1] * len(lrs)) for lrs in rec.between)  # the factor never stays
    assert len(rec.between) == 6  # 3 batches per epoch: steps after batches 2 and 3 (the epoch's end)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("LRScaling:"))
    assert "global batch 8 (batch x accumulation x devices x nodes = 4 x 2 x 1 x 1)" in line
    assert "LRs x 2" in line and "warmup 2 optimizer steps from 0.5" in line


def test_sqrt_rule_keeps_discriminative_ratios_under_cosine(tmp_path: Path) -> None:
    rec = StepLRs()
    model = tiny_model(lr=0.05, lr_scheduler=partial(Cosine))
    trainer = tiny_fit(model, [LRScaling(rule="sqrt", reference_batch=1, warmup=0), rec], tmp_path, max_steps=3)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.base_lrs == pytest.approx([0.1] * len(sched.base_lrs))  # sqrt(4) x 0.05
    first = rec.stepped[0]
    assert first == pytest.approx([0.1] * len(first))  # cosine at step 0 = peak, no warmup asked


def test_onecycle_warms_up_itself_and_frozen_groups_stay_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = StepLRs()
    model = tiny_model(lr=0.05, lr_scheduler=partial(OneCycle))
    fine = FineTune("freeze", lr_mults={"head": 2.0})
    with caplog.at_level(logging.INFO):
        trainer = tiny_fit(model, [LRScaling(reference_batch=2), fine, rec], tmp_path, max_steps=4)
    assert "no warmup (the schedule OneCycle warms up already)" in caplog.text
    sched = trainer.lr_scheduler_configs[0].scheduler
    names = [g.get("group") for g in trainer.optimizers[0].param_groups]
    for name, base, lrs in zip(names, sched.base_lrs, zip(*rec.stepped, strict=True), strict=True):
        if name == "head":
            assert base == pytest.approx(0.05 * 2 * 2)  # scale 4 / 2 = 2, FineTune's head multiplier 2
            assert max(lrs) > 0
        else:
            assert base == 0.0 and set(lrs) == {0.0}  # frozen by LR 0: still 0


def test_lr_range_test_after_scaling_replaces_the_lr(tmp_path: Path) -> None:
    rec = StepLRs()
    finder = LRRangeTest(num_steps=6, apply=True)
    tiny_fit(tiny_model(lr=0.05), [LRScaling(reference_batch=2, warmup=0), finder, rec], tmp_path, max_steps=2)
    assert rec.stepped[0][-1] == pytest.approx(finder.results["lr"])  # found at this batch, not scaled again


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rule": "quadratic"}, r"rule='quadratic' is not one of \['linear', 'sqrt', 'none'\]"),
    ({"reference_batch": 0}, r"reference_batch=0 must be an int >= 1"),
    ({"batch_size": 2.5}, r"batch_size=2.5 must be an int >= 1"),
    ({"warmup_start": 1.0}, r"warmup_start=1.0 must be in \[0, 1\)"),
    ({"warmup": "5 epochs"}, r"warmup='5 epochs' is not a duration"),
    ({"warmup": 1.5}, r"warmup=1.5 is not a duration"),
    ({"warmup": -3}, r"warmup=-3 is not a duration"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LRScaling(**kwargs)


@pytest.mark.parametrize(("callbacks", "kw", "match"), [
    (lambda: [FineTune("freeze"), LRScaling()], {}, r"FineTune is listed before LRScaling"),
    (lambda: [LRScaling(), FineTune("no_freeze", lr_range=[0.01, 0.1])], {},
     r"FineTune\(lr_range=\[0.01, 0.1\]\) sets absolute"),
    (lambda: [LRScaling(reference_batch=2, warmup=6)], {},
     r"warmup=6 is 6 optimizer steps, not shorter than training \(6 steps\)"),
])
def test_trainer_errors(callbacks: Any, kw: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_fit(tiny_model(), callbacks(), tmp_path, **kw)


def _resume_fit(tmp_path: Path, ckpt: str | None = None, crash: int | None = None,
                **kw: Any) -> tuple[Any, Trainer, LRScaling]:
    cb = LRScaling(reference_batch=2, warmup="2ep")  # scale 2, warmup 6 steps (3 per epoch)
    extra: list[Callback] = [Crash(crash)] if crash is not None else []
    model = tiny_model(lr=0.05, lr_scheduler=partial(Cosine))
    ckpts = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    trainer = tiny_fit(model, [cb, *extra, ckpts], tmp_path, ckpt_path=ckpt, max_steps=-1, max_epochs=3,
                       enable_checkpointing=True, **kw)
    return model, trainer, cb


def test_crash_and_resume_equals_straight_run(tmp_path: Path) -> None:
    straight, s_trainer, s_cb = _resume_fit(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _resume_fit(tmp_path / "crashed", crash=4)  # mid-warmup, in epoch 1
    ckpt = tmp_path / "crashed" / "epoch=0.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("LRScaling"))
    assert state["applied"]["warmup_steps"] == 6 and state["applied"]["scale"] == 2.0
    resumed, r_trainer, r_cb = _resume_fit(tmp_path / "resumed", ckpt=str(ckpt))
    assert r_cb.state_dict() == s_cb.state_dict()
    assert_states_close(resumed.state_dict(), straight.state_dict(), rtol=1e-6, atol=1e-7)
    lrs = [[g["lr"] for g in t.optimizers[0].param_groups] for t in (s_trainer, r_trainer)]
    assert lrs[0] == pytest.approx(lrs[1], rel=1e-12)  # scaled once, not twice
    # and resuming at another global batch is refused
    with pytest.raises(ValueError, match=r"scaled for a global batch of 4, this fit has 8"):
        _resume_fit(tmp_path / "other", ckpt=str(ckpt), accumulate_grad_batches=2)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_with_accumulation(tmp_path: Path) -> None:
    # per process 4, accumulation 2, 2 processes: global 16 = 4 x reference 4.
    run_ddp_script(tmp_path, '''
        from functools import partial
        from lightning.pytorch import Callback
        from torch.utils.data import DataLoader, TensorDataset
        from lightkit.callbacks import LRScaling
        from lightkit.models import ImageClassifier

        class Rec(Callback):
            def __init__(self):
                self.lrs = []
            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                self.lrs.append(float(optimizer.param_groups[-1]["lr"]))

        seed_everything(0)
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(32, 1, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                                optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
        cb, rec = LRScaling(reference_batch=4, warmup=2), Rec()
        trainer = ddp_trainer(max_steps=3, accumulate_grad_batches=2, callbacks=[cb, rec], limit_val_batches=0)
        trainer.fit(model, DataLoader(data, batch_size=4))
        save_rank({"applied": cb.applied, "lrs": rec.lrs,
                   "after": [float(g["lr"]) for g in trainer.optimizers[0].param_groups]})
    ''')
    for rank in load_ranks(tmp_path):
        assert rank["applied"] == {"global_batch": 16, "scale": 4.0, "rule": "linear", "reference_batch": 4,
                                   "warmup_steps": 2, "warmup_start": 0.25}
        assert rank["lrs"] == pytest.approx([0.2 * 0.25, 0.2 * 0.625, 0.2])
        assert rank["after"] == pytest.approx([0.2] * len(rank["after"]))
