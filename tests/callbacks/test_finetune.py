"""``FineTune`` in short CPU fits: freezing, BN policy, per-group LR formulas per phase, monitors, resume."""

from __future__ import annotations

import csv
import functools
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.finetune import FineTune, PhaseSchedule
from lightkit.functional.groups import geometric_lrs
from lightkit.functional.schedules import cosine, one_cycle
from lightkit.lr_schedulers import Cosine
from lightkit.models.classifier import ImageClassifier

REPO = Path(__file__).resolve().parents[2]
GROUPS = ["encoder.stem", "encoder.block1", "encoder.block2", "encoder.block3", "encoder.block4", "head"]
LR = 1e-2


def _model(**kwargs: Any) -> ImageClassifier:
    torch.manual_seed(0)
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.05))
    return ImageClassifier(encoder="test_resnet", num_classes=4, **kwargs)


def _loader(n: int = 12, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _fit(model: LightningModule, callbacks: list[Callback], tmp_path: Path, ckpt_path: str | None = None,
         val: bool = False, **kwargs: Any) -> Trainer:
    kwargs = {"max_epochs": 2, "logger": False, "enable_checkpointing": False, **kwargs}
    trainer = Trainer(accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1 if val else 0, **kwargs)
    trainer.fit(model, _loader(), _loader(4) if val else None, ckpt_path=ckpt_path)
    return trainer


class LRRecorder(Callback):
    """Records, at each batch start, every optimizer group's LR / initial_lr and the scheduler's base_lrs.

    Placed before FineTune in the callback list, it also shows that the values are already right
    whatever the callback order (FineTune sets the next step's LRs at the previous batch's end).
    """

    def __init__(self, finetune: FineTune) -> None:
        self.finetune, self.rows = finetune, []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        opt = trainer.optimizers[0]
        names = [g.get("name", f"pg{j}") for j, g in enumerate(opt.param_groups)]
        sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        self.rows.append({
            "step": trainer.global_step, "phase": self.finetune.phase,
            "lr": {n: float(g["lr"]) for n, g in zip(names, opt.param_groups, strict=True)},
            "initial_lr": {n: g.get("initial_lr") for n, g in zip(names, opt.param_groups, strict=True)},
            "base_lrs": dict(zip(names, sched.base_lrs, strict=True)) if sched is not None else None,
            "requires_grad": {n: all(p.requires_grad for p in g["params"])
                              for n, g in zip(names, opt.param_groups, strict=True)},
        })


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- freezing -----------------------------------------------------------------------------------
def test_frozen_bit_identical_unfrozen_move_no_optimizer_state(tmp_path: Path) -> None:
    model = _model()
    before = _snapshot(model)
    cb = FineTune("freeze")
    trainer = _fit(model, [cb], tmp_path)
    after = model.state_dict()
    for key, value in before.items():
        moved = not torch.equal(value, after[key])
        assert moved == key.startswith("head."), key  # encoder weights AND BN buffers untouched
    frozen = {id(p) for n, p in model.named_parameters() if n.startswith("encoder.")}
    assert not any(id(p) in frozen for p in trainer.optimizers[0].state)  # AdamW never touched them
    assert all(p.requires_grad for p in model.parameters())  # teardown leaves the module as found


@pytest.mark.parametrize("train_bn", [False, True])
def test_bn_policy_of_frozen_groups(train_bn: bool, tmp_path: Path) -> None:
    class Recording(ImageClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.modes.append(self.encoder.bn1.training)
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    model = Recording(encoder="test_resnet", num_classes=4,
                      optimizer=functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.05))
    model.modes = []
    before = _snapshot(model)
    _fit(model, [FineTune("freeze", train_bn=train_bn)], tmp_path, val=True)
    after = model.state_dict()
    assert model.modes == [train_bn] * 6  # across epochs and after validation switched modes back
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and n.startswith("encoder.")]
    bn_keys = [k for k in before if k.rsplit(".", 1)[0] in bns]
    assert len(bns) > 5 and len(bn_keys) == 5 * len(bns)
    conv_keys = [k for k in before if k.startswith("encoder.") and k not in bn_keys]
    assert all(torch.equal(before[k], after[k]) for k in conv_keys)
    stats = [k for k in bn_keys if "running" in k]
    assert all(torch.equal(before[k], after[k]) != train_bn for k in stats)
    assert all(torch.equal(before[k], after[k]) != train_bn for k in bn_keys if k.endswith(".weight"))


# -- LRs: the formula at every step of every phase -------------------------------------------------
def test_freeze_unfreeze_lr_range_phase_schedules(tmp_path: Path) -> None:
    specs = [PhaseSchedule(lr_scale=2.0, pct_start=0.9), PhaseSchedule(pct_start=0.4, div_factor=5.0)]
    cb = FineTune("freeze_unfreeze", unfreeze_at=1, lr_range=[1e-5, 1e-3], schedule=specs)
    rec = LRRecorder(cb)
    _fit(_model(), [rec, cb], tmp_path, max_epochs=3)
    bases = dict(zip(GROUPS, geometric_lrs(1e-5, 1e-3, len(GROUPS)), strict=True))
    assert [r["phase"] for r in rec.rows] == [0] * 3 + [1] * 6
    for row in rec.rows:
        t, phase = row["step"], row["phase"]
        start, length = (0, 3) if phase == 0 else (3, 6)
        spec = specs[phase]
        factor = one_cycle(t - start, length, spec.pct_start, spec.div_factor, spec.final_div_factor)
        for name, lr in row["lr"].items():
            group = name.removesuffix("/no_decay")
            frozen = phase == 0 and group != "head"
            base = 0.0 if frozen else bases[group] * spec.lr_scale
            assert lr == pytest.approx(base * factor, rel=1e-12, abs=0.0), (t, name)
            assert row["initial_lr"][name] == pytest.approx(base, rel=1e-12)
            assert row["requires_grad"][name] != frozen


def test_gradual_steps_lr_mults_under_module_scheduler(tmp_path: Path) -> None:
    mults = {"encoder.stem": 0.01, "encoder.block4": 0.3}
    cb = FineTune("gradual", unfreeze_at=[2, 5], unit="step", lr_mults=mults)
    rec = LRRecorder(cb)
    _fit(_model(lr_scheduler=Cosine), [rec, cb], tmp_path, max_epochs=3)
    assert [r["phase"] for r in rec.rows] == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    for row in rec.rows:
        t, trainable = row["step"], GROUPS[len(GROUPS) - 1 - row["phase"]:]
        for name, lr in row["lr"].items():
            group = name.removesuffix("/no_decay")
            base = LR * mults.get(group, 1.0) if group in trainable else 0.0
            assert row["initial_lr"][name] == pytest.approx(base) and row["base_lrs"][name] == pytest.approx(base)
            assert lr == pytest.approx(base * cosine(t, 9), rel=1e-12, abs=0.0), (t, name)


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_lr_monitor_logs_named_groups_across_unfreeze(interval: str, tmp_path: Path) -> None:
    # Lightning issues 6891 / 10024 / 20340: param groups added mid-run broke LearningRateMonitor.
    cb = FineTune("freeze_unfreeze", unfreeze_at=1)
    monitor = LearningRateMonitor(logging_interval=interval, log_momentum=True, log_weight_decay=True)
    _fit(_model(), [monitor, cb], tmp_path, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    stem = [float(r["lr-AdamW/encoder.stem"]) for r in rows if r.get("lr-AdamW/encoder.stem")]
    head = [float(r["lr-AdamW/head"]) for r in rows if r.get("lr-AdamW/head")]
    assert stem == pytest.approx([0.0] * 3 + [LR] * 3 if interval == "step" else [0.0, LR])
    assert head == pytest.approx([LR] * len(stem))
    assert {f"lr-AdamW/{g}" for g in GROUPS} | {"lr-AdamW/head/no_decay-momentum"} <= set(rows[0])
    phases = [float(r["finetune/phase"]) for r in rows if r.get("finetune/phase")]
    lrs = [float(r["finetune/lr/encoder.block2"]) for r in rows if r.get("finetune/lr/encoder.block2")]
    assert phases == [0.0] * 3 + [1.0] * 3 and lrs == pytest.approx([0.0] * 3 + [LR] * 3)


# -- resume: crash in the middle of each phase == straight run ----------------------------------------
RESUME = {
    "freeze_unfreeze": dict(kw={"strategy": "freeze_unfreeze", "unfreeze_at": 2, "lr_range": [1e-4, 1e-2],
                                "schedule": [PhaseSchedule(pct_start=0.5),
                                             PhaseSchedule(pct_start=0.4, div_factor=5.0)]},
                            sched=None),
    "gradual": dict(kw={"strategy": "gradual", "unfreeze_at": [4, 7], "unit": "step", "lr_mults": {"head": 2.0}},
                    sched=Cosine),
}
_STRAIGHT: dict[str, Any] = {}


def _straight(name: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if name not in _STRAIGHT:
        root = tmp_path_factory.mktemp(f"straight_{name}")
        cb = FineTune(**RESUME[name]["kw"])
        model = _model(lr_scheduler=RESUME[name]["sched"])
        ckpt = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
        trainer = _fit(model, [cb, ckpt], root, max_epochs=4, enable_checkpointing=True)
        _STRAIGHT[name] = (root, _snapshot(model), cb.state_dict(),
                           [g["lr"] for g in trainer.optimizers[0].param_groups])
    return _STRAIGHT[name]


@pytest.mark.parametrize("epoch", [0, 1, 2])
@pytest.mark.parametrize("name", list(RESUME))
def test_resume_mid_phase_equals_straight_run(name: str, epoch: int, tmp_path: Path,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    root, weights, state, lrs = _straight(name, tmp_path_factory)
    saved = torch.load(root / f"epoch={epoch}.ckpt", weights_only=False)
    phase_at_crash = next(v for k, v in saved["callbacks"].items() if k.startswith("FineTune"))["phase"]
    assert phase_at_crash == {0: 0, 1: 1, 2: 1 if name == "freeze_unfreeze" else 2}[epoch]
    cb = FineTune(**RESUME[name]["kw"])
    model = _model(lr_scheduler=RESUME[name]["sched"])
    trainer = _fit(model, [cb], tmp_path, max_epochs=4, ckpt_path=str(root / f"epoch={epoch}.ckpt"))
    assert cb.state_dict() == state
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == pytest.approx(lrs, rel=1e-12)
    for key, value in weights.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


# -- a plain LightningModule: torchvision-like features / classifier -----------------------------------
class PlainModule(LightningModule):
    def __init__(self, per_group: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, 4)
        self.per_group = per_group

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.classifier(self.features(batch[0])), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = ([{"params": self.features.parameters()}, {"params": self.classifier.parameters()}]
                  if self.per_group else self.parameters())
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


class EpochSnapshots(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.states.append(_snapshot(pl_module))


@pytest.mark.parametrize("per_group", [True, False])
def test_plain_module_with_named_groups(per_group: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PlainModule(per_group)
    cb = FineTune("freeze_unfreeze", unfreeze_at=1, groups={"features": ["features"], "classifier": ["classifier"]},
                  lr_mults={"features": 0.1} if per_group else None)
    rec, snaps = LRRecorder(cb), EpochSnapshots()
    _fit(model, [rec, cb, snaps], tmp_path)
    start, after_phase0, end = snaps.states[0], snaps.states[1], _snapshot(model)
    for key in start:
        assert torch.equal(start[key], after_phase0[key]) == key.startswith("features."), key
        assert not torch.equal(start[key], end[key]) or key.endswith("num_batches_tracked"), key
    if per_group:
        assert [r["lr"]["pg0"] for r in rec.rows] == [0.0] * 3 + [pytest.approx(0.01)] * 3
        assert [r["lr"]["pg1"] for r in rec.rows] == [0.1] * 6
    else:  # one optimizer group for both: requires_grad alone freezes; its LR is not touched
        assert [r["lr"]["pg0"] for r in rec.rows] == [0.1] * 6


# -- lifecycle -----------------------------------------------------------------------------------
def test_state_roundtrip_pickle_and_fit_twice(tmp_path: Path) -> None:
    cb = FineTune("gradual", unfreeze_at=1, unit="step", schedule=[PhaseSchedule(shape="constant")])
    pickle.loads(pickle.dumps(cb))
    _fit(_model(), [cb], tmp_path, max_epochs=1)
    state = cb.state_dict()
    assert state["phase"] == 2 and state["phase_starts"] == [0, 1, 2] and state["group_names"] == GROUPS
    assert state["trainable"] == GROUPS[-3:]
    other = FineTune("gradual", unfreeze_at=1, unit="step")
    other.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert other.phase == 2 and other.phase_starts == [0, 1, 2]
    _fit(_model(), [cb], tmp_path, max_epochs=1)  # the same instance starts again from phase 0
    assert cb.state_dict() == state


def test_config_parses_through_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkit.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["cli.py", "--config", "configs/finetune_fastai.yaml", "--trainer.logger", "false",
                                      "--model.init_args.encoder", "test_resnet",
                                      # the config's resnet10t weights do not fit test_resnet (refused since issue 16)
                                      "--model.init_args.pretrained", "false",
                                      "--trainer.default_root_dir", str(tmp_path)])
    cli = main(run=False)
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, FineTune))
    assert cb.strategy == "freeze_unfreeze" and cb.unfreeze_at == 1 and cb.lr_range == [1e-5, 1e-3]
    assert cb.schedule == [PhaseSchedule(lr_scale=2.0, pct_start=0.99), PhaseSchedule(pct_start=0.4, div_factor=5.0)]
    assert cli.model.lr_scheduler_factory is None


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "thaw"}, "strategy='thaw' is not one of"),
        ({"unit": "batch"}, "unit='batch'"),
        ({"strategy": "freeze", "unfreeze_at": 2}, "unfreeze_at=2 is unused by strategy='freeze'"),
        ({"unfreeze_at": [1, 2]}, r"unfreeze_at=\[1, 2\] must be one int for freeze_unfreeze"),
        ({"strategy": "gradual", "unfreeze_at": [2, 2]}, "must be >= 1 and strictly increasing"),
        ({"unfreeze_at": 0}, "unfreeze_at=0 must be >= 1"),
        ({"lr_range": [1e-5, 1e-3], "lr_mults": {"head": 2.0}}, "lr_range and lr_mults both given"),
        ({"lr_range": [1e-3, 1e-5]}, r"lr_range=\[0.001, 1e-05\] must be \[stem_lr, head_lr\]"),
        ({"lr_range": [1e-3]}, r"lr_range=\[0.001\]"),
        ({"lr_mults": {"head": 0.0}}, "lr_mults=.* must all be > 0"),
        ({"groups": {"a": ["features("]}}, "not a valid regex"),
        ({"schedule": []}, r"schedule=\[\] gives no phase"),
    ],
)
def test_init_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FineTune(**kwargs)


@pytest.mark.parametrize(
    ("module", "kwargs", "trainer_kwargs", "match"),
    [
        ("plain", {}, {}, "PlainModule has no layer_groups"),
        ("plain", {"groups": {"all": ["features", "classifier"]}}, {}, r"needs >= 2 layer groups, found \['all'\]"),
        ("plain",
         {"strategy": "no_freeze", "groups": {"f": ["features"], "c": ["classifier"]}, "lr_range": [1e-3, 1e-2]},
         {}, "param group 0 mixes"),
        ("lightkit", {"lr_mults": {"neck": 2.0}}, {}, r"unknown groups \['neck'\]"),
        ("lightkit", {"strategy": "gradual", "unfreeze_at": [1, 2, 3, 4, 5, 6]}, {}, "6 milestones for 5 groups"),
        ("lightkit", {"unfreeze_at": 2}, {}, r"unfreeze_at=\[2\] \(epochs\) is at or past the end"),
        ("lightkit", {"schedule": [PhaseSchedule()] * 3}, {"max_epochs": 4}, "3 PhaseSchedules for 2 phases"),
        ("lightkit", {"schedule": [PhaseSchedule(pct_start=0.3)]}, {}, r"phase 0 \(3 steps from step 0\): one_cycle"),
        ("lightkit", {"schedule": [PhaseSchedule(shape="constant")]}, {"max_epochs": -1}, "finite training length"),
        ("sched", {"schedule": [PhaseSchedule(shape="constant")]}, {}, "and the module's Cosine would both set the LR"),
        ("torch_sched", {}, {}, "cannot keep per-group LRs under OneCycleLR"),
    ],
)
def test_fit_errors(module: str, kwargs: dict, trainer_kwargs: dict, match: str, tmp_path: Path) -> None:
    model = {
        "plain": lambda: PlainModule(per_group=False),
        "lightkit": _model,
        "sched": lambda: _model(lr_scheduler=Cosine),
        "torch_sched": lambda: _model(lr_scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=LR)),
    }[module]()
    with pytest.raises(ValueError, match=match):
        _fit(model, [FineTune(**kwargs)], tmp_path, **trainer_kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "gradual", "unit": "step", "groups": {"encoder": ["encoder"], "head": ["head"]}},
         "checkpoint was written with groups"),
        ({"strategy": "freeze_unfreeze", "unfreeze_at": 1, "unit": "step"},
         "is in phase 2, but this fit has only 2 phases"),
    ],
)
def test_resume_mismatch_errors(kwargs: dict, match: str, tmp_path: Path) -> None:
    cb = FineTune("gradual", unfreeze_at=[1, 2], unit="step")
    _fit(_model(), [cb, ModelCheckpoint(dirpath=tmp_path, filename="last")], tmp_path, max_epochs=1,
         enable_checkpointing=True)
    assert cb.phase == 2
    with pytest.raises(ValueError, match=match):
        _fit(_model(), [FineTune(**kwargs)], tmp_path, ckpt_path=str(tmp_path / "last.ckpt"))
