"""``MultiTaskClassifier``: tasks, weighting, gradients, soft sharing, main-task inference, FineTune, resume, CLI."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.callbacks.finetune import FineTune
from lightkit.data.multitask import DigitsMultiTaskDataModule
from lightkit.export import load_classifier
from lightkit.models.multitask import MainTaskModel, MultiTaskClassifier, Task

REPO = Path(__file__).resolve().parents[2]
TASKS = [{"name": "digit", "main": True}, {"name": "parity", "type": "binary"}, {"name": "ge5", "type": "binary"},
         {"name": "angle", "type": "regression"}]


def _model(**kw: Any) -> MultiTaskClassifier:
    torch.manual_seed(0)
    kw.setdefault("tasks", TASKS)
    kw.setdefault("optimizer", partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    return MultiTaskClassifier(encoder="test_resnet", num_classes=10, in_chans=1, **kw)


def _dm(**kw: Any) -> DigitsMultiTaskDataModule:
    return DigitsMultiTaskDataModule(batch_size=16, image_size=16, samples_per_class=4, **kw)


def _trainer(tmp_path: Path, callbacks: list[Callback] | None = None, **kw: Any) -> Trainer:
    kw.setdefault("max_epochs", 1)
    kw.setdefault("enable_checkpointing", False)
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=callbacks or [],
                   **{"limit_val_batches": 1, **kw})


# -- tasks and arguments -----------------------------------------------------------------------------
def test_defaults_filled_and_hparams_plain() -> None:
    model = _model(tasks=[Task("digit", main=True), Task("parity", type="binary")])
    digit, parity = model.tasks
    assert (digit.num_classes, digit.loss, digit.metrics) == (10, "cross_entropy", ["acc", "f1", "acc_top5"])
    assert (parity.num_classes, parity.loss, parity.metrics) == (None, "bce", ["acc", "f1"])
    assert all(isinstance(t, dict) for t in model.hparams["tasks"])  # loads with weights_only=True
    single = MultiTaskClassifier(encoder="test_resnet", num_classes=3, in_chans=1)
    assert [(t.name, t.main, t.num_classes) for t in single.tasks] == [("label", True, 3)]
    names = [name for name, _ in model.layer_groups()]
    assert names[0] == "encoder.stem" and names[-1] == "head"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tasks": []}, r"tasks=\[\] declares no task"),
        ({"tasks": [{"name": "a"}, {"name": "b", "type": "binary"}]}, r"0 main tasks \[\] among \['a', 'b'\]"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "main": True}]}, r"2 main tasks \['a', 'b'\]"),
        ({"tasks": [{"name": "a", "main": True, "colour": 1}]}, r"tasks\[0\] has unknown keys \['colour'\]"),
        ({"tasks": [{"type": "binary"}]}, r"tasks\[0\]=\{'type': 'binary'\} has no name"),
        ({"tasks": ["digit"]}, r"tasks\[0\]='digit' must be a mapping"),
        ({"tasks": [{"name": "a-b", "main": True}]}, r"task name 'a-b' must be an identifier"),
        ({"tasks": [{"name": "keys", "main": True}]}, r"task name 'keys' must be an identifier .*ModuleDict"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "a", "type": "binary"}]}, r"task name 'a' appears 2 times"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "type": "ranking"}]}, r"type='ranking' is not one of"),
        ({"tasks": [{"name": "a", "type": "binary", "main": True}]}, r"the main task has type='binary'"),
        ({"tasks": [{"name": "a", "main": True, "num_classes": 3}]}, r"num_classes=3 but the model's num_classes=10"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b"}]},
         r"task 'b': a multiclass task needs num_classes >= 2"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "type": "binary", "num_classes": 2}]},
         r"num_classes=2 is only for multiclass tasks"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "type": "regression", "loss": "bce"}]},
         r"loss='bce' does not fit type 'regression'; use one of \['mse', 'l1', 'smooth_l1'\]"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "type": "regression", "metrics": ["acc"]}]},
         r"metric 'acc' is not available for type 'regression'"),
        ({"tasks": [{"name": "a", "main": True}, {"name": "b", "num_classes": 3, "metrics": ["acc_top5"]}]},
         r"acc_top5 needs more than 5 classes, the task has 3"),
        ({"tasks": [{"name": "a", "main": True, "weight": -1.0}]}, r"weight=-1.0 must be >= 0"),
        ({"tasks": [{"name": "a", "main": True, "weight": 2.0}], "weighting": "dwa"},
         r"weight=2.0 is ignored by weighting='dwa'"),
        ({"weighting": "gradnorm"}, r"weighting='gradnorm' is not one of 'fixed', 'uncertainty', 'dwa'"),
        ({"sharing": "partial"}, r"sharing='partial' is not one of 'hard', 'soft'"),
        ({"dwa_temperature": 0.0}, r"dwa_temperature=0.0 must be > 0"),
        ({"soft_sharing_strength": -1.0}, r"soft_sharing_strength=-1.0 must be >= 0"),
        ({"uncertainty_lr": 0.1}, r"uncertainty_lr=0.1 needs weighting='uncertainty'"),
        ({"tasks": [{"name": "a", "main": True}], "sharing": "soft"}, r"sharing='soft' with 1 task"),
        ({"class_names": ["x", "y"]}, r"2 class_names for the main task 'digit' with 10 classes"),
    ],
)
def test_init_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_fixed_weights_combine_by_hand() -> None:
    tasks = [{"name": "digit", "main": True, "weight": 2.0}, {"name": "angle", "type": "regression", "weight": 0.5}]
    model = _model(tasks=tasks)
    assert float(model.combine(torch.tensor([1.5, 4.0]))) == pytest.approx(2.0 * 1.5 + 0.5 * 4.0)
    unc = _model(weighting="uncertainty",
                 tasks=[{"name": "digit", "main": True}, {"name": "angle", "type": "regression"}])
    with torch.no_grad():
        unc.log_vars.copy_(torch.tensor([0.4, -0.2]))
    expected = torch.exp(torch.tensor(-0.4)) * 1.5 + 0.2 + 0.5 * torch.exp(torch.tensor(0.2)) * 4.0 - 0.1
    assert float(unc.combine(torch.tensor([1.5, 4.0])).detach()) == pytest.approx(float(expected), rel=1e-6)


# -- gradients ---------------------------------------------------------------------------------------
class _Grads(Callback):
    def __init__(self) -> None:
        self.norms: dict[str, float] = {}

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.norms = {n: float(p.grad.norm()) if p.grad is not None else 0.0 for n, p in pl_module.named_parameters()}


@pytest.mark.parametrize("sharing", ["hard", "soft"])
def test_gradients_reach_every_head_encoder_and_log_var(sharing: str, tmp_path: Path) -> None:
    grads = _Grads()
    model = _model(weighting="uncertainty", sharing=sharing)
    _trainer(tmp_path, [grads], max_steps=1).fit(model, datamodule=_dm())
    for task in ("digit", "parity", "ge5", "angle"):
        assert grads.norms[f"heads.{task}.0.weight"] > 0, task
        if sharing == "soft":
            stem = next(n for n in grads.norms if n.startswith(f"encoders.{task}."))
            assert grads.norms[stem] > 0, stem
    assert grads.norms["log_vars"] > 0
    groups = {g["name"]: g for g in model.trainer.optimizers[0].param_groups}
    assert groups["loss_weights"]["weight_decay"] == 0.0 and groups["loss_weights"]["params"][0] is model.log_vars
    assert model.trainer.callback_metrics["task/angle/sigma"] > 0


def test_soft_sharing_penalty_in_the_loss(tmp_path: Path) -> None:
    model = _model(sharing="soft", soft_sharing_strength=0.5)
    encoders = list(model.encoders.values())
    assert all(torch.equal(a, b) for a, b in zip(encoders[0].parameters(), encoders[1].parameters(), strict=True))
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(model, datamodule=_dm())
    assert float(trainer.callback_metrics["train/soft_sharing_penalty"]) > 0  # the encoders drifted apart
    names = [n for n, _ in model.layer_groups()[0][1]]  # the stem group holds the stem of every encoder
    assert {n.split(".")[1] for n in names} == {"digit", "parity", "ge5", "angle"}


# -- main-task inference -----------------------------------------------------------------------------
@pytest.mark.parametrize("sharing", ["hard", "soft"])
def test_main_task_only_equals_full_model(sharing: str, tmp_path: Path) -> None:
    model = _model(sharing=sharing)
    dm = _dm()
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, datamodule=dm)
    model.eval()
    x = torch.cat([b[0] for b in dm.test_dataloader()])[:20]
    with torch.no_grad():
        full = model.forward_tasks(x)
        main_only = model.main_task_model()(x)
        assert set(full) == {"digit", "parity", "ge5", "angle"} and full["parity"].shape == (20,)
        torch.testing.assert_close(main_only, full["digit"], rtol=0, atol=0)
        torch.testing.assert_close(model(x), full["digit"], rtol=0, atol=0)
        before = model.predict_step((x, torch.arange(20)), 0)
        n_params = sum(p.numel() for p in model.parameters())
        model.drop_auxiliary_heads()
        after = model.predict_step((x, torch.arange(20)), 0)
    assert list(model.heads) == ["digit"] and sum(p.numel() for p in model.parameters()) < n_params
    torch.testing.assert_close(after["probs"], full["digit"].softmax(1), rtol=0, atol=0)
    torch.testing.assert_close(after["probs"], before["probs"], rtol=0, atol=0)
    assert after["index"].tolist() == list(range(20))
    with pytest.raises(ValueError, match=r"auxiliary heads were dropped \(drop_auxiliary_heads\)"):
        model.validation_step((x, *([torch.zeros(20)] * 4)), 0)


@pytest.mark.slow
def test_predict_writes_main_task_csv_and_export_loads_main_head(tmp_path: Path) -> None:
    from lightkit.callbacks.prediction_writer import PredictionWriter

    model = _model(class_names=[f"d{i}" for i in range(10)])
    dm = _dm()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = _trainer(tmp_path, [ckpt, PredictionWriter(output=str(tmp_path / "pred.csv"))], max_steps=2,
                       enable_checkpointing=True)
    trainer.fit(model, datamodule=dm)
    trainer.predict(model, datamodule=dm)
    rows = (tmp_path / "pred.csv").read_text().splitlines()
    assert rows[0].startswith("input,label,probability") and len(rows) == 1 + len(dm._datasets["test"])
    assert rows[1].split(",")[1].startswith("d")
    module, meta = load_classifier(tmp_path / "last.ckpt")
    assert isinstance(module, MainTaskModel) and meta["task"] == "digit" and meta["num_classes"] == 10
    assert meta["class_names"][0] == "d0" and meta["input_size"] == [1, 16, 16]
    x = torch.randn(3, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x))


# -- data matching -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ([{"name": "digit", "main": True}, {"name": "colour", "type": "binary"}],
         r"tasks \['colour'\] have no column in the data, whose targets are \['digit', 'parity', 'ge5', 'angle'\]"),
        ([{"name": "digit", "num_classes": 10}, {"name": "parity", "num_classes": 10, "main": True}],
         r"the main task is 'parity' but the data's labels .* are 'digit'"),
        ([{"name": "digit", "main": True}, {"name": "parity", "num_classes": 3}],
         r"task 'parity' has num_classes=3 but its data column has 2 classes"),
    ],
)
def test_setup_errors(tasks: list, match: str, tmp_path: Path) -> None:
    class Named(DigitsMultiTaskDataModule):
        task_num_classes = {"digit": 10, "parity": 2}  # as a CSV module reports string columns

    model = MultiTaskClassifier(tasks=tasks, encoder="test_resnet", in_chans=1,
                                num_classes=None if tasks[1].get("main") else 10)
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, max_steps=1).fit(model, datamodule=Named(batch_size=16, image_size=16, samples_per_class=4))


def test_plain_loader_positional_and_too_few_targets(tmp_path: Path) -> None:
    x = torch.randn(8, 1, 16, 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(8) % 10), batch_size=4)
    single = _model(tasks=[{"name": "digit"}])
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(single, loader)
    with pytest.raises(ValueError, match=r"the batch has 1 target\(s\) but tasks .* need 4"):
        _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(_model(), loader)


# -- FineTune, resume, DWA ---------------------------------------------------------------------------
def test_finetune_freeze_unfreeze_trains_heads_and_log_vars_first(tmp_path: Path) -> None:
    model = _model(weighting="uncertainty", optimizer=partial(torch.optim.AdamW, lr=1e-2))
    enc0 = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    heads0 = {n: p.detach().clone() for n, p in model.heads.named_parameters()}
    lv0 = model.log_vars.detach().clone()

    class AtEpochEnd(Callback):
        def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            if trainer.current_epoch == 0:
                self.enc = {n: p.detach().clone() for n, p in pl_module.encoder.named_parameters()}
                self.heads = {n: p.detach().clone() for n, p in pl_module.heads.named_parameters()}
                self.lv = pl_module.log_vars.detach().clone()

    spy = AtEpochEnd()
    trainer = _trainer(tmp_path, [FineTune(strategy="freeze_unfreeze", unfreeze_at=1), spy], max_epochs=2)
    trainer.fit(model, datamodule=_dm())
    assert all(torch.equal(spy.enc[n], enc0[n]) for n in enc0)  # phase 0: encoder frozen
    assert all(not torch.equal(spy.heads[n], heads0[n]) for n in heads0 if n.endswith("weight"))
    assert not torch.equal(spy.lv, lv0)  # the log-variances belong to no layer group: never frozen
    assert any(not torch.equal(p, enc0[n]) for n, p in model.encoder.named_parameters())  # phase 1 moved it


def _snapshot(model: MultiTaskClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["dwa", "uncertainty"])
def test_resume_equals_straight_run(weighting: str, tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    straight = _model(weighting=weighting)
    _trainer(tmp_path / "a", [ckpt], max_epochs=4, enable_checkpointing=True).fit(straight, datamodule=_dm())
    resumed = _model(weighting=weighting)
    _trainer(tmp_path / "b", max_epochs=4).fit(resumed, datamodule=_dm(), ckpt_path=str(tmp_path / "ck/epoch=1.ckpt"))
    a, b = _snapshot(straight), _snapshot(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    if weighting == "dwa":
        assert len(straight._dwa_history) == 2
        torch.testing.assert_close(torch.tensor(resumed._dwa_history), torch.tensor(straight._dwa_history))
        torch.testing.assert_close(resumed.task_weights(), straight.task_weights())
        assert not torch.allclose(straight.task_weights(), torch.ones(4))  # DWA moved off equal weights
    else:
        assert not torch.equal(a["log_vars"], torch.zeros(4))


# -- the config through the real CLI -----------------------------------------------------------------
@pytest.mark.slow
def test_config_runs_short_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightkit.cli import main

    sys_argv = sys.argv
    try:
        cli = main(["fit", "--config", str(REPO / "configs/multitask.yaml"), "--model.init_args.encoder=test_resnet",
                    "--model.init_args.pretrained=false", "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
                    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                    "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
                    "--trainer.enable_model_summary=false", "--data.init_args.image_size=16",
                    "--trainer.log_every_n_steps=1",
                    f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"])
    finally:
        sys.argv = sys_argv
    assert cli is None or cli.trainer.global_step == 2
    out = capsys.readouterr().out
    assert "test/acc" in out
    metrics = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    for key in ("task/parity/val_acc", "task/angle/val_mae", "task/digit/sigma", "val/acc", "test/acc"):
        assert key in metrics, key
    ckpt = next(tmp_path.rglob("*.ckpt"))
    hparams = torch.load(ckpt, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert hparams["num_classes"] == 10 and hparams["in_chans"] == 1 and [t["name"] for t in hparams["tasks"]] == [
        "digit", "parity", "ge5", "angle"]
