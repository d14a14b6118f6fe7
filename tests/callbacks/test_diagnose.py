"""``Diagnose``: each planted fault gives its diagnosis, a healthy run gives none, state resumes exactly."""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.diagnose import Diagnose, TrainingDiverged
from lightkit.callbacks.mixing import MixUpCutMix
from lightkit.models.classifier import ImageClassifier

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class Net(LightningModule):
    """An MLP on 8 features and 4 classes, with knobs that plant one fault each."""

    def __init__(self, act: str = "relu", lr: float = 0.1, bias: float | None = None, weight_scale: float = 1.0,
                 grad_scale: float = 1.0, unused: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), ACTIVATIONS[act](), nn.Linear(32, 4))
        with torch.no_grad():
            self.net[0].weight.mul_(weight_scale)
            if bias is not None:
                self.net[0].bias.fill_(bias)
        self.unused = nn.Linear(2, 2) if unused else None
        self.lr, self.grad_scale = lr, grad_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        # Same value, gradient scaled by grad_scale: plants exploding / vanishing gradients.
        return out * self.grad_scale + out.detach() * (1 - self.grad_scale)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(seed: int = 0, n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # learnable: 4 quadrants
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _fit(model: LightningModule, callbacks: list[Callback], tmp_path: Path, max_steps: int = 8,
         ckpt_path: str | None = None, train: DataLoader | None = None, val: DataLoader | None = None) -> Trainer:
    trainer = Trainer(max_steps=max_steps, default_root_dir=tmp_path, accelerator="cpu", enable_progress_bar=False,
                      logger=False, enable_model_summary=False, callbacks=callbacks,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
    trainer.fit(model, train or _loader(), val or _loader(seed=1), ckpt_path=ckpt_path)
    return trainer


def _kinds(diagnose: Diagnose) -> list[str]:
    return [f.kind for f in diagnose.findings]


# -- planted faults in real fits --------------------------------------------------------------
def test_huge_lr_raises_at_the_nan_step_names_last_good_checkpoint_and_writes_none_after(tmp_path: Path) -> None:
    diagnose = Diagnose(every_n_steps=1)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    with pytest.warns(UserWarning, match=r"training loss is nan at step \d+; stopping the run now"), \
            pytest.raises(TrainingDiverged, match=r"training loss is nan at step \d+") as info:
        _fit(Net(lr=1e4), [diagnose, checkpoints], tmp_path, max_steps=40)
    finding = next(f for f in diagnose.findings if f.kind == "nonfinite_loss")
    assert info.value.step == finding.step and str(info.value) == finding.message
    # Net is not a lightkit model: the fix is said in words, not in lightkit's YAML keys.
    assert "the learning rate (your configure_optimizers)" in finding.message and "init_args" not in finding.message
    good = re.search(r"Last good checkpoint: (\S+) \(step (\d+)\)", finding.message)
    assert good and Path(good[1]).exists() and int(good[2]) < finding.step and info.value.last_good == good[1]
    # Nothing written from diverged weights: the weights of the NaN step's save (its loss is only seen
    # a step later) are checked for NaN / Inf before the file is written.
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(t.isfinite().all() for t in state.values() if t.is_floating_point()), path.name
        assert int(re.search(r"step=(\d+)", path.name)[1]) <= finding.step


def test_stop_mode_sets_should_stop_instead_of_raising(tmp_path: Path) -> None:
    diagnose = Diagnose(every_n_steps=1, on_divergence="stop")
    with pytest.warns(UserWarning, match=r"training loss is nan at step \d+; stopping training"):
        trainer = _fit(Net(lr=1e4), [diagnose], tmp_path, max_steps=40)
    assert trainer.should_stop and trainer.global_step < 40


def test_exploding_finite_loss_is_a_divergence() -> None:
    diagnose, trainer = Diagnose(every_n_steps=100, explode_factor=100.0), _fake_trainer()
    with pytest.warns(UserWarning, match=r"training loss exploded to 1\.4e\+10 at step 12"), \
            pytest.raises(TrainingDiverged, match=r"lower `model\.init_args\.optimizer\.init_args\.lr`"):
        _feed(diagnose, trainer, [2.3] * 12 + [1.4e10, 1.0])
    assert diagnose.divergence == "exploding_loss" and diagnose.nonfinite_step == 12
    # Below the factor, or before the 10 initial losses are known, it is no divergence.
    calm, trainer = Diagnose(every_n_steps=100), _fake_trainer()
    _feed(calm, trainer, [2.3, 500.0] + [2.3] * 10 + [200.0, 2.0])
    assert calm.nonfinite_step is None


def test_nonfinite_validation_loss_is_a_divergence() -> None:
    diagnose, trainer = Diagnose(on_divergence="stop"), _fake_trainer()
    _feed(diagnose, trainer, [2.3] * 4)
    with pytest.warns(UserWarning, match=r"validation loss \(val/loss\) is nan at step 4: the weights diverged"):
        _validate(diagnose, trainer, float("nan"))
    assert trainer.should_stop and diagnose.divergence == "nonfinite_val_loss"


@pytest.mark.parametrize(
    ("model", "kind", "key"),
    [
        (Net(bias=-100.0), "dead_layer", "net.1"),
        (Net(act="tanh", weight_scale=100.0), "saturated_layer", "net.1"),
        (Net(grad_scale=1e6), "exploding_gradients", "Trainer(gradient_clip_val=1.0)"),
        (Net(grad_scale=1e-12), "vanishing_gradients", "the initialisation of the last layers"),
        (Net(unused=True), "no_gradient", "unused.weight"),
    ],
    ids=["dead", "saturated", "exploding", "vanishing", "no_gradient"],
)
def test_planted_fault_is_diagnosed(model: Net, kind: str, key: str, tmp_path: Path) -> None:
    diagnose = Diagnose(every_n_steps=2, on_divergence="warn")  # exploding gradients also diverge the weights
    _fit(model, [diagnose], tmp_path, max_steps=4)
    assert kind in _kinds(diagnose)
    finding = next(f for f in diagnose.findings if f.kind == kind)
    assert key in finding.message + " ".join(finding.layers)
    assert len(finding.message.splitlines()) == 1


def test_healthy_runs_raise_no_alarm(tmp_path: Path) -> None:
    diagnose = Diagnose(every_n_steps=4, window=8, plateau_steps=24, overfit_patience=2)
    _fit(Net(), [diagnose], tmp_path, max_steps=32)
    assert diagnose.findings == [] and diagnose.seen == 32 and len(diagnose.eval_val) == 8
    diagnose = Diagnose(every_n_steps=1)
    g = torch.Generator().manual_seed(0)
    images = DataLoader(TensorDataset(torch.randn(8, 1, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)),
                        batch_size=4)
    _fit(ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1), [diagnose], tmp_path / "img", 4,
         train=images, val=images)
    assert diagnose.findings == []


def test_pause_flag_silences_diagnoses(tmp_path: Path) -> None:
    model = Net(lr=1e4)
    model.lightkit_pause_monitor = True
    diagnose = Diagnose(every_n_steps=1)
    trainer = _fit(model, [diagnose], tmp_path, max_steps=12)
    assert trainer.global_step == 12 and diagnose.findings == [] and diagnose.seen == 0


# -- loss-sequence diagnoses fed through the hooks -------------------------------------------
def _fake_trainer() -> SimpleNamespace:
    return SimpleNamespace(global_step=0, is_global_zero=True, sanity_checking=False, world_size=1, should_stop=False,
                           callback_metrics={}, state=SimpleNamespace(fn="fit"), checkpoint_callbacks=[])


def _feed(diagnose: Diagnose, trainer: SimpleNamespace, losses: list[float]) -> None:
    module = SimpleNamespace()
    for loss in losses:
        diagnose.on_train_batch_start(trainer, module, None, 0)  # type: ignore[arg-type]
        diagnose.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, None, 0)  # type: ignore[arg-type]
        trainer.global_step += 1


def _validate(diagnose: Diagnose, trainer: SimpleNamespace, val_loss: float) -> None:
    trainer.callback_metrics = {"val/loss": torch.tensor(val_loss)}
    diagnose.on_validation_end(trainer, SimpleNamespace())  # type: ignore[arg-type]


def test_overfitting_from_train_falling_and_val_rising() -> None:
    diagnose, trainer = Diagnose(overfit_patience=2), _fake_trainer()
    for i, val in enumerate([1.9, 1.6, 1.7]):
        _feed(diagnose, trainer, [2.0 - 0.2 * i] * 5)
        _validate(diagnose, trainer, val)
    assert "overfitting" not in _kinds(diagnose)  # best val only one evaluation old
    _feed(diagnose, trainer, [1.2] * 5)
    with pytest.warns(UserWarning, match=r"overfitting\. Regularise .*model\.init_args\.dropout"):
        _validate(diagnose, trainer, 1.8)
    assert _kinds(diagnose) == ["overfitting"] and diagnose.findings[0].step == 20


def _validate_at_lr(diagnose: Diagnose, trainer: SimpleNamespace, val_loss: float, lr: float) -> None:
    trainer.optimizers = [SimpleNamespace(param_groups=[{"lr": lr / 10}, {"lr": lr}])]  # discriminative groups
    _validate(diagnose, trainer, val_loss)


def test_overfitting_waits_while_the_lr_rises() -> None:
    # A one-cycle warmup: the validation loss is above its best for two evaluations while the LR still climbs.
    diagnose, trainer = Diagnose(overfit_patience=2), _fake_trainer()
    for i, (val, lr) in enumerate([(1.9, 0.1), (1.6, 0.2), (1.7, 0.5), (1.8, 1.0)]):
        _feed(diagnose, trainer, [2.0 - 0.2 * i] * 5)
        _validate_at_lr(diagnose, trainer, val, lr)
    assert diagnose.findings == [] and diagnose.eval_lr == [0.1, 0.2, 0.5, 1.0]
    # Annealed below the LR of the best evaluation, the same rise is overfitting.
    _feed(diagnose, trainer, [1.1] * 5)
    with pytest.warns(UserWarning, match=r"overfitting\. Regularise"):
        _validate_at_lr(diagnose, trainer, 1.9, 0.15)
    assert _kinds(diagnose) == ["overfitting"]
    # The LRs are part of the state: a resumed run compares against the same best evaluation's LR.
    resumed = Diagnose(overfit_patience=2)
    resumed.load_state_dict(diagnose.state_dict())
    assert resumed.eval_lr == [0.1, 0.2, 0.5, 1.0, 0.15]
    old = {k: v for k, v in diagnose.state_dict().items() if k != "eval_lr"}  # a checkpoint from before eval_lr
    resumed.load_state_dict(old)
    assert len(resumed.eval_lr) == 5 and all(math.isnan(v) for v in resumed.eval_lr)


@pytest.mark.parametrize(
    ("checkpoint", "note"),
    [
        (ModelCheckpoint(monitor="val/loss", mode="min"), True),  # the recipe's: best val/loss weights are tested
        (ModelCheckpoint(monitor="val/acc", mode="max"), False),
        (ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=0), False),  # keeps nothing
        (ModelCheckpoint(), False),  # the last weights
    ],
)
def test_overfitting_is_an_info_line_when_the_best_checkpoint_is_kept(
    checkpoint: ModelCheckpoint, note: bool, caplog: pytest.LogCaptureFixture
) -> None:
    diagnose, trainer = Diagnose(overfit_patience=2), _fake_trainer()
    trainer.checkpoint_callback = checkpoint  # the trainer's first ModelCheckpoint: what ckpt_path='best' uses
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        for i, val in enumerate([1.9, 1.6, 1.7, 1.8]):
            _feed(diagnose, trainer, [2.0 - 0.2 * i] * 5)
            _validate(diagnose, trainer, val)
    assert _kinds(diagnose) == ["overfitting"]
    warned = [str(w.message) for w in caught if "overfitting" in str(w.message)]
    logged = [r.getMessage() for r in caplog.records if "overfitting" in r.getMessage()]
    if note:
        assert warned == [] and logged == [diagnose.findings[0].message]
        assert re.search(r"above its best 1\.6 for 2 evaluations \(now 1\.8\) .*: overfitting; a ModelCheckpoint keeps "
                         r"the best val/loss weights", logged[0])
    else:
        assert len(warned) == 1 and "Regularise" in warned[0] and logged == []


def _mixing_trainer(epoch: int, max_epochs: int = 10) -> SimpleNamespace:
    trainer = _fake_trainer()
    trainer.training, trainer.current_epoch, trainer.max_epochs = True, epoch, max_epochs
    return trainer


def test_noisy_loss_is_not_checked_while_batches_are_mixed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # MixUp/CutMix on half the batches: mixed and clean batches' losses differ by design.
    diagnose = Diagnose(every_n_steps=5, window=10, plateau_steps=1000, warn_every_n_steps=1)
    mixing = MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, off_last_epochs=2)
    with caplog.at_level(logging.INFO):
        diagnose.setup(Trainer(default_root_dir=tmp_path, logger=False, callbacks=[mixing, diagnose]), Net(), "fit")
    assert any(r.getMessage() == "Diagnose: noisy_loss not checked: MixUpCutMix mixes 50% of training batches, so "
               "the step loss varies by design." for r in caplog.records)
    trainer = _mixing_trainer(epoch=0)
    _feed(diagnose, trainer, [0.5, 3.0] * 30)
    assert diagnose.findings == [] and diagnose.last_mixed == 59
    # In off_last_epochs the batches are clean again: once the window holds no mixed loss, noise is reported.
    trainer.current_epoch = 8
    with pytest.warns(UserWarning, match=r"very noisy"):
        _feed(diagnose, trainer, [0.5, 3.0] * 10)
    assert [f.step for f in diagnose.findings if f.kind == "noisy_loss"] == [70, 75]  # steps 60-69 waited
    # prob 0 mixes nothing, and the check stays on.
    plain = Diagnose(every_n_steps=5, window=10, plateau_steps=1000)
    no_mixing = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[MixUpCutMix(prob=0.0), plain])
    plain.setup(no_mixing, Net(), "fit")
    with pytest.warns(UserWarning, match=r"very noisy"):
        _feed(plain, _mixing_trainer(epoch=0), [0.5, 3.0] * 30)
    assert _kinds(plain)[:1] == ["noisy_loss"] and plain.last_mixed == -1


def test_noisy_loss_warns_once_per_interval() -> None:
    diagnose, trainer = Diagnose(every_n_steps=5, window=10, plateau_steps=1000, warn_every_n_steps=20), _fake_trainer()
    with pytest.warns(UserWarning, match=r"very noisy .*data\.init_args\.batch_size"):
        _feed(diagnose, trainer, [0.5, 3.0] * 30)
    assert [(f.kind, f.step) for f in diagnose.findings] == [("noisy_loss", 10), ("noisy_loss", 30), ("noisy_loss", 50)]
    smooth, trainer = Diagnose(every_n_steps=5, window=10, plateau_steps=1000), _fake_trainer()
    _feed(smooth, trainer, [3.0 - 0.04 * i + 0.01 * (-1) ** i for i in range(60)])
    assert smooth.findings == []


def test_loss_not_decreasing() -> None:
    diagnose, trainer = Diagnose(every_n_steps=5, window=10, plateau_steps=30), _fake_trainer()
    with pytest.warns(UserWarning,
                      match=r"has not gone down after 31 steps.*Raise `model\.init_args\.optimizer\.init_args\.lr`"):
        _feed(diagnose, trainer, [2.3 + 0.01 * (-1) ** i for i in range(40)])
    assert _kinds(diagnose) == ["loss_not_decreasing"]


def test_nan_in_sequence_stops_with_lag_of_at_most_one_step() -> None:
    diagnose, trainer = Diagnose(every_n_steps=100, on_divergence="stop"), _fake_trainer()
    with pytest.warns(UserWarning, match=r"loss is inf at step 3; stopping training\. Last good checkpoint: none"):
        _feed(diagnose, trainer, [2.0, 1.9, 1.8, float("inf"), 1.7])
    assert trainer.should_stop and diagnose.nonfinite_step == 3 and diagnose.seen == 3


# -- state --------------------------------------------------------------------------------------
def test_state_round_trip() -> None:
    diagnose, trainer = Diagnose(every_n_steps=5, window=10, plateau_steps=20), _fake_trainer()
    _feed(diagnose, trainer, [2.3] * 12)
    _validate(diagnose, trainer, 2.0)
    _feed(diagnose, trainer, [2.3] * 10)  # the last loss is still pending (read one step late)
    state = diagnose.state_dict()
    assert len(state["pending"]) == 1 and state["findings"]
    clone = Diagnose(every_n_steps=5, window=10, plateau_steps=20)
    clone.load_state_dict(state)
    assert clone.state_dict() == state
    assert clone.findings == diagnose.findings


def test_resume_is_exact(tmp_path: Path) -> None:
    def make() -> Diagnose:
        # noise_cv tiny: a noisy_loss finding on most checks, so findings and warn times cross the resume point.
        return Diagnose(every_n_steps=2, window=4, plateau_steps=4, overfit_patience=1, warn_every_n_steps=3,
                        noise_cv=0.01)

    def net() -> Net:
        torch.manual_seed(0)
        return Net(lr=0.5)

    straight = make()
    _fit(net(), [straight], tmp_path / "a", max_steps=12)
    first = make()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    _fit(net(), [first, saver], tmp_path / "b", max_steps=8)
    resumed = make()
    _fit(net(), [resumed], tmp_path / "c", max_steps=12, ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=8.ckpt"))
    expected = straight.state_dict()
    expected["checkpoint_steps"] = [4, 8]  # the straight run saved none; the resumed one knows 4 and 8
    assert resumed.state_dict() == expected
    assert straight.seen == 12 and len(straight.eval_val) == 3
    assert [f.step for f in straight.findings if f.kind == "noisy_loss"] == [4, 8]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_steps": 0}, r"every_n_steps=0"),
        ({"overfit_patience": 0}, r"overfit_patience=0"),
        ({"warn_every_n_steps": 0}, r"warn_every_n_steps=0"),
        ({"min_grad_norm": 10.0, "max_grad_norm": 1.0}, r"min_grad_norm=10.0, max_grad_norm=1.0"),
        ({"dead_fraction": 0.0}, r"dead_fraction=0.0"),
        ({"saturated_fraction": 1.5}, r"saturated_fraction=1.5"),
        ({"window": 2}, r"window=2"),
        ({"noise_cv": 0.0}, r"noise_cv=0.0"),
        ({"plateau_steps": 10, "window": 20}, r"plateau_steps=10 must be >= window=20"),
        ({"min_decrease": 1.0}, r"min_decrease=1.0"),
        ({"layers": "("}, r"layers='\('"),
        ({"on_divergence": "halt"}, r"on_divergence='halt'; choose raise, stop or warn"),
        ({"explode_factor": 1.0}, r"explode_factor=1.0 must be > 1"),
    ],
)
def test_argument_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Diagnose(**kwargs)


def test_setup_error_when_regex_matches_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"layers='nothing' matches no module of Net"):
        Diagnose(layers="nothing").setup(Trainer(default_root_dir=tmp_path, logger=False), Net(), "fit")


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_nan_on_one_rank_stops_both_and_monitors_write_once(tmp_path: Path) -> None:
    from tests.helpers.ddp import load_ranks, run_ddp_script

    run_ddp_script(tmp_path, """
        import torch.nn.functional as F
        from lightning.pytorch import LightningModule
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        from lightkit.callbacks.activations import ActivationMonitor
        from lightkit.callbacks.curves import LossCurves
        from lightkit.callbacks.diagnose import Diagnose, TrainingDiverged
        from lightkit.callbacks.gradients import GradientMonitor

        class Net(LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
            def training_step(self, batch, batch_idx):
                loss = F.cross_entropy(self.net(batch[0]), batch[1])
                if self.global_rank == 1 and self.global_step == 3:  # NaN on one rank only
                    loss = loss * float("nan")
                return loss
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        seed_everything(0)
        data = TensorDataset(torch.randn(64, 8), torch.randint(0, 4, (64,)))
        diagnose = Diagnose(every_n_steps=2, on_divergence="stop")
        trainer = ddp_trainer(max_steps=20, callbacks=[diagnose, ActivationMonitor(every_n_steps=2),
                                                       GradientMonitor(every_n_steps=2), LossCurves()])
        trainer.fit(Net(), DataLoader(data, batch_size=4))
        save_rank({"step": trainer.global_step, "stop": trainer.should_stop, "bad": diagnose.nonfinite_step,
                   "kinds": [f.kind for f in diagnose.findings]})
    """)
    r0, r1 = load_ranks(tmp_path)
    assert r0["stop"] and r1["stop"] and r0["step"] == r1["step"] < 20
    assert r1["bad"] == 3 and r0["bad"] is not None and "nonfinite_loss" in r0["kinds"]
    assert {p.name for p in (tmp_path / "monitor").iterdir()} == {"activations.png", "gradients.png", "curves.png"}
