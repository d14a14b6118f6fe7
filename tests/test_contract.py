"""The callback contract: every class in ``lightkit.callbacks.__all__``, discovered, checked the same way.

Each callback must build from its defaults (or from the minimal arguments in ``MINIMAL``, which say why),
round-trip its ``state_dict``, pickle (before and after a fit), run a short fit on a LightningModule that
lightkit did not write (its own attribute names, its own ``configure_optimizers``, no timm), fit twice with
one instance, and parse from YAML through the CLI. (Composer ``tests/callbacks/``; STYLE.md, Tests.)
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightkit.callbacks
from lightkit.cli import main

NAMES = list(lightkit.callbacks.__all__)
NUM_CLASSES = 4


def _ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
    """An EMA ``multi_avg_fn`` at module level (torch's own is a closure, which does not pickle)."""
    for a, c in zip(averaged, current, strict=True):
        a.lerp_(c, 0.1) if a.is_floating_point() else a.copy_(c)


# Arguments a callback cannot do without, and why. Everything else builds from its defaults.
MINIMAL: dict[str, dict[str, Any]] = {
    "SaveEncoder": {"path": "{tmp}/encoder.safetensors"},  # where to write has no sensible default
    "RawSafeWeightAveraging": {
        "multi_avg_fn": _ema_update
    },  # the base of EMA / SWA: the average is its argument
}
# What a module lightkit did not write must name, because lightkit cannot know it.
FOREIGN: dict[str, dict[str, Any]] = {
    "FineTune": {
        "groups": {"trunk": ["trunk"], "classifier": ["classifier"]}
    },  # no layer_groups(): name them
    "MixUpCutMix": {"num_classes": NUM_CLASSES},  # no hparams.num_classes to read
    "SaveEncoder": {"attribute": "trunk"},  # its encoder has its own name
}
# Callbacks that do not meet the contract yet, and why (strict: the entry must go when the fix lands).
PENDING: dict[str, str] = {}
# Arguments that keep the short fit short (defaults sized for real runs).
SHORT: dict[str, dict[str, Any]] = {
    "LRRangeTest": {"num_steps": 12, "end_lr": 1.0},
    "ActivationMonitor": {"every_n_steps": 2},
    "GradientMonitor": {"every_n_steps": 2},
    "Diagnose": {"every_n_steps": 2},
    "SnapshotEnsemble": {"cycles": 2},
    "FineTune": {"unit": "step", "unfreeze_at": 3},  # the default unfreezes after epoch 1; the fit is 6 steps
}
# Not expressible in YAML: a function argument. Checked everywhere else.
NO_YAML = {"RawSafeWeightAveraging": "multi_avg_fn is a function (EMA and SWA set it; they parse from YAML)"}


def _kwargs(name: str, tmp_path: Path, short: bool = True, foreign: bool = False) -> dict[str, Any]:
    out = {}
    extra = {**(SHORT.get(name, {}) if short else {}), **(FOREIGN.get(name, {}) if foreign else {})}
    for key, value in {**MINIMAL.get(name, {}), **extra}.items():
        if isinstance(value, str):
            value = value.format(tmp=tmp_path)
        out[key] = value
    return out


def _build(name: str, tmp_path: Path, short: bool = True, foreign: bool = False) -> Callback:
    return getattr(lightkit.callbacks, name)(**_kwargs(name, tmp_path, short, foreign))


class ForeignNet(LightningModule):
    """A module lightkit did not write: plain torch layers under its own names, its own optimizer, its own
    keys."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.trunk(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)  # y: class indices or (mixed) class probabilities
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean())

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).softmax(-1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)
    )
    return DataLoader(data, batch_size=4)


def _fit(callback: Callback, root: Path) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=6,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[callback],
    )
    trainer.fit(ForeignNet(), _loader(24, 0), _loader(8, 1))
    return trainer


def _plain(state: Any) -> str:
    """A state_dict in comparable form: JSON text, tensors as lists (NaN equals NaN there)."""

    def convert(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.tolist()
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return json.dumps(convert(state), sort_keys=True, default=repr)


def test_discovery_finds_every_callback() -> None:
    assert len(NAMES) >= 19 and len(set(NAMES)) == len(NAMES)
    for name in NAMES:
        assert issubclass(getattr(lightkit.callbacks, name), Callback), name
    assert set(MINIMAL) | set(SHORT) | set(NO_YAML) | set(FOREIGN) | set(PENDING) <= set(NAMES), (
        "an entry names no callback"
    )


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_defaults_or_the_documented_minimum(name: str, tmp_path: Path) -> None:
    cls = getattr(lightkit.callbacks, name)
    required = {p.name for p in inspect.signature(cls).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    assert required == set(MINIMAL.get(name, {})), (
        f"{name}: required arguments {sorted(required)}; document them in MINIMAL"
    )
    assert isinstance(_build(name, tmp_path, short=False), cls)


FIT_CASES = [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=PENDING[n])) if n in PENDING else n
             for n in NAMES]


@pytest.mark.parametrize("name", FIT_CASES)
def test_fits_a_foreign_module_twice_pickles_and_round_trips_state(name: str, tmp_path: Path) -> None:
    callback = _build(name, tmp_path, foreign=True)
    pickle.loads(pickle.dumps(callback))
    for run in ("first", "second"):  # one instance, two fits (a notebook re-running trainer.fit)
        trainer = _fit(callback, tmp_path / run)
        assert trainer.global_step > 0 and trainer.state.finished, f"{name}: {run} fit did not finish"
    state = callback.state_dict()
    clone = pickle.loads(
        pickle.dumps(callback)
    )  # after a fit too (checkpointing, ddp_spawn pickle callbacks)
    assert _plain(clone.state_dict()) == _plain(state)
    fresh = _build(name, tmp_path, foreign=True)
    fresh.load_state_dict(copy.deepcopy(state))
    assert _plain(fresh.state_dict()) == _plain(state), f"{name}: state_dict does not round-trip"


@pytest.mark.parametrize("name", NAMES)
def test_parses_from_yaml_through_the_cli(name: str, tmp_path: Path) -> None:
    if name in NO_YAML:
        pytest.skip(NO_YAML[name])
    entry = {"class_path": f"lightkit.callbacks.{name}", "init_args": _kwargs(name, tmp_path)}
    config = {"trainer": {"accelerator": "cpu", "logger": False, "callbacks": [entry]},
              "model": {"class_path": "lightkit.models.ImageClassifier",
                        "init_args": {"encoder": "test_resnet", "pretrained": False}},
              "data": {"class_path": "lightkit.data.DigitsDataModule", "init_args": {"image_size": 32}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)
    cls = getattr(lightkit.callbacks, name)
    assert sum(type(cb) is cls for cb in cli.trainer.callbacks) == 1


# -- what a module lightkit did not write needs from particular callbacks (issue 17, item 5) -------
class ForeignNetOwnKeys(ForeignNet):
    """ForeignNet logging under its own key names (``val_loss``) and measuring its own accuracy."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        hard = lightkit.callbacks.MixUpCutMix.hard_labels(y)  # (mixed) probabilities -> class indices
        self.log("train_acc", (logits.argmax(-1) == hard).float().mean())
        return F.cross_entropy(logits, y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))


def _foreign_trainer(root: Path, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    return Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=root, callbacks=callbacks, **kwargs)


def test_foreign_prediction_writer_takes_the_modules_probability_tensor(tmp_path: Path) -> None:
    writer = lightkit.callbacks.PredictionWriter(output=str(tmp_path / "p.csv"), top_k=2)
    trainer = _foreign_trainer(tmp_path, [writer])
    trainer.predict(ForeignNet(), _loader(8, 0), return_predictions=False)
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("input,label,probability,top2_label")
    assert all(0 < float(r.split(",")[2]) <= 1 for r in rows[1:])


def test_foreign_loss_curves_names_the_keys_the_module_logs(tmp_path: Path) -> None:
    curves = lightkit.callbacks.LossCurves(dirpath=str(tmp_path / "curves"))
    with pytest.warns(UserWarning, match=r"never logged by ForeignNetOwnKeys.*'val_loss'"):
        _foreign_trainer(tmp_path, [curves], val_check_interval=2, limit_val_batches=1).fit(
            ForeignNetOwnKeys(), _loader(24, 0), _loader(8, 1))


def test_foreign_mixup_keeps_the_modules_own_accuracy_working(tmp_path: Path) -> None:
    mixer = lightkit.callbacks.MixUpCutMix(num_classes=NUM_CLASSES, mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0)
    trainer = _foreign_trainer(tmp_path, [mixer], limit_val_batches=0)
    trainer.fit(ForeignNetOwnKeys(), _loader(24, 0))
    assert trainer.global_step == 6 and 0.0 <= float(trainer.callback_metrics["train_acc"]) <= 1.0


def test_foreign_diagnose_and_lr_range_test_give_generic_advice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """No ``model.init_args...`` key for a module lightkit did not write: the fix in words."""
    finder = lightkit.callbacks.LRRangeTest(num_steps=12, end_lr=1.0)
    _foreign_trainer(tmp_path / "lr", [finder]).fit(ForeignNet(), _loader(24, 0))
    out = capsys.readouterr().out
    assert "in your configure_optimizers (or LRRangeTest(apply=True))" in out and "model.init_args" not in out
    applied = lightkit.callbacks.LRRangeTest(num_steps=12, end_lr=1.0, apply=True)
    _foreign_trainer(tmp_path / "lr2", [applied]).fit(ForeignNet(), _loader(24, 0))
    out = capsys.readouterr().out
    assert "in your configure_optimizers (applied to this fit)" in out

    class Exploding(ForeignNet):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=1e6)

    diagnose = lightkit.callbacks.Diagnose(every_n_steps=1, on_divergence="stop")
    with pytest.warns(UserWarning, match=r"the learning rate \(your configure_optimizers\)") as record:
        _foreign_trainer(tmp_path / "dg", [diagnose], limit_val_batches=0).fit(Exploding(), _loader(24, 0))
    assert not any("model.init_args" in str(w.message) for w in record)
