"""Monitoring callbacks in short CPU fits: hooks only on logging steps, numbers by hand, PNGs, W&B offline,
state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.activations import ActivationMonitor
from lightkit.callbacks.curves import LossCurves
from lightkit.callbacks.filters import FilterMonitor, filter_grid
from lightkit.callbacks.gradients import GradientMonitor
from lightkit.loggers import WandbLogger
from lightkit.models.classifier import ImageClassifier


class HookCountingClassifier(ImageClassifier):
    """Records how many forward hooks the stem activation carries during each training step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.hook_counts.append(len(self.encoder.act1._forward_hooks))
        return super().training_step(batch, batch_idx)


class Tiny(LightningModule):
    """Linear(2, 4) + ReLU + Linear(4, 1) with known weights: units 0 and 3 of the ReLU are dead on positive
    inputs."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        with torch.no_grad():
            self.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
            self.net[0].bias.copy_(torch.tensor([-100.0, 0.0, 0.0, 0.0]))
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.mse_loss(self.net(batch[0]).squeeze(1), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _image_loader(n: int = 8, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)),
        batch_size=batch_size,
    )


def _tiny_loader() -> DataLoader:
    return DataLoader(
        TensorDataset(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 2.0])), batch_size=2
    )


def _trainer(tmp_path: Path, callbacks: list[Callback], max_steps: int, **kwargs: Any) -> Trainer:
    options = {
        "logger": False,
        "enable_checkpointing": False,
        "limit_val_batches": 1,
        "enable_model_summary": False,
    }
    return Trainer(
        max_steps=max_steps,
        default_root_dir=tmp_path,
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=callbacks,
        **{**options, **kwargs},
    )


def test_short_fit_hooks_only_on_logging_steps_and_pngs(tmp_path: Path) -> None:
    model = HookCountingClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
    model.hook_counts = []
    acts, grads, filters, curves = (
        ActivationMonitor(every_n_steps=2),
        GradientMonitor(every_n_steps=2),
        FilterMonitor(),
        LossCurves(sync_every_n_steps=3),
    )
    _trainer(tmp_path, [acts, grads, filters, curves], max_steps=4).fit(
        model, _image_loader(), _image_loader()
    )
    assert model.hook_counts == [1, 0, 1, 0]
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert acts.last["step"] == 2 and "encoder.layer1.0.act2" in acts.last["stats"]
    assert [h["step"] for h in grads.history] == [0, 2]
    assert curves.train["step"] == [1.0, 2.0, 3.0, 4.0] and len(curves.val["loss"]) == 2
    assert curves.train_epochs["acc"] and all(0 <= a <= 1 for a in curves.train_epochs["acc"])
    out = tmp_path / "monitor"
    for name in (
        "activations.png",
        "gradients.png",
        "curves.png",
        "filters/init.png",
        "filters/epoch=000.png",
        "filters/epoch=001.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    assert curves.save(tmp_path / "on_demand.png").exists()


def test_numbers_by_hand_in_a_fit(tmp_path: Path) -> None:
    model = Tiny(lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    acts, grads = ActivationMonitor(every_n_steps=1), GradientMonitor(every_n_steps=1, params="all")
    _trainer(tmp_path, [acts, grads], max_steps=1).fit(model, _tiny_loader())
    dead = dict(zip(("mean", "std", "zero", "dead", "saturated"), acts.last["stats"]["net.1"], strict=True))[
        "dead"
    ]
    assert dead == pytest.approx(0.5)
    assert grads.names == ["net.0", "net.0.bias", "net.2", "net.2.bias"]
    after = dict(model.named_parameters())
    for i, name in enumerate(n for n, _ in model.named_parameters()):
        step = torch.linalg.vector_norm(after[name].detach() - before[name])
        assert grads.history[0]["norms"][i] == pytest.approx(
            float(step / 0.1), rel=1e-4
        )  # SGD: step = lr * grad
        assert grads.history[0]["ratios"][i] == pytest.approx(
            float(step / torch.linalg.vector_norm(before[name])), rel=1e-4
        )
    assert grads.history[0]["grad_norm"] == pytest.approx(
        sum(v * v for v in grads.history[0]["norms"]) ** 0.5, rel=1e-5
    )
    for callback in (acts, grads):  # state round trip
        clone = type(callback)()
        clone.load_state_dict(callback.state_dict())
        assert clone.state_dict() == callback.state_dict()


def test_pause_flag_skips_everything(tmp_path: Path) -> None:
    model = Tiny()
    model.lightkit_pause_monitor = True
    acts, grads, curves = ActivationMonitor(every_n_steps=1), GradientMonitor(every_n_steps=1), LossCurves()
    _trainer(tmp_path, [acts, grads, curves], max_steps=2).fit(model, _tiny_loader())
    assert not acts.last and not grads.history and not curves.train["step"]
    assert not (tmp_path / "monitor").exists()


def test_fitting_twice_with_one_instance_starts_afresh(tmp_path: Path) -> None:
    acts, grads, curves = ActivationMonitor(every_n_steps=1), GradientMonitor(every_n_steps=1), LossCurves()
    for run in ("a", "b"):
        _trainer(tmp_path / run, [acts, grads, curves], max_steps=2).fit(Tiny(), _tiny_loader())
        assert acts.last["step"] == 1 and [h["step"] for h in grads.history] == [0, 1]
        assert curves.train["step"] == [1.0, 2.0]
        assert (tmp_path / run / "monitor" / "curves.png").exists()


def test_wandb_offline_gets_histograms_and_images(tmp_path: Path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
    callbacks = [
        ActivationMonitor(every_n_steps=1),
        GradientMonitor(every_n_steps=1),
        FilterMonitor(),
        LossCurves(),
    ]
    _trainer(tmp_path, callbacks, max_steps=2, logger=logger).fit(model, _image_loader(), _image_loader())
    logger.experiment.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    images = {p.name.split("_")[0] for p in (run_dir / "files" / "media" / "images" / "monitor").iterdir()}
    assert {"activations", "gradients", "filters", "curves"} <= images
    wandb_cli = Path(sys.executable).with_name("wandb")
    command = [
        str(wandb_cli) if wandb_cli.exists() else "wandb",
        "leet",
        "inspect",
        "--summary",
        "--json",
        str(run_dir),
    ]
    summary = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    )["summary"]
    assert summary["monitor/encoder.act1/act_hist"]["_type"] == "histogram"
    assert summary["monitor/encoder.conv1.0/grad_hist"]["_type"] == "histogram"
    assert 0.0 <= summary["monitor/encoder.act1/act_dead"] <= 1.0
    assert summary["monitor/grad_norm"] > 0
    assert summary["monitor/filters"]["_type"].startswith("images")


def test_filter_grid_shapes() -> None:
    gray = filter_grid(torch.randn(16, 1, 3, 3))
    assert gray.dtype == torch.uint8 and gray.shape[0] == 3 and gray.shape[1] >= 4 * 24
    rgb = filter_grid(torch.randn(4, 3, 7, 7), min_tile=7)
    assert rgb.shape == (3, 2 * 7 + 3 * 2, 2 * 7 + 3 * 2)
    assert int(rgb.min()) == 0 and int(rgb.max()) == 255


def test_curves_state_round_trip() -> None:
    curves = LossCurves()
    curves.train = {"step": [1.0, 2.0], "loss": [2.3, 2.1]}
    curves.lr, curves.lr_steps = {"head": [0.1, 0.1]}, [1, 2]
    clone = LossCurves()
    clone.load_state_dict(curves.state_dict())
    assert clone.state_dict() == curves.state_dict()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ActivationMonitor(every_n_steps=0), r"every_n_steps=0"),
        (lambda: ActivationMonitor(bins=-1), r"bins=-1"),
        (lambda: ActivationMonitor(layers="("), r"layers='\('"),
        (lambda: GradientMonitor(every_n_steps=0), r"every_n_steps=0"),
        (lambda: GradientMonitor(bins=-2), r"bins=-2"),
        (lambda: GradientMonitor(params="["), r"params='\['"),
        (lambda: FilterMonitor(every_n_epochs=0), r"every_n_epochs=0"),
        (lambda: LossCurves(sync_every_n_steps=0), r"sync_every_n_steps=0"),
        (lambda: LossCurves(smoothing=1.0), r"smoothing=1.0"),
        (lambda: filter_grid(torch.ones(3, 3)), r"weight shape \(3, 3\)"),
    ],
)
def test_argument_errors(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("callback", "match"),
    [
        (ActivationMonitor(layers="nothing_here"), r"layers='nothing_here' matches no module of Tiny"),
        (GradientMonitor(params="nothing_here"), r"params='nothing_here' matches no parameter of Tiny"),
        (FilterMonitor(), r"Tiny has no nn.Conv2d"),
        (FilterMonitor(layer="net.0"), r"layer='net.0' is a Linear"),
        (FilterMonitor(layer="stem"), r"layer='stem' is missing"),
    ],
)
def test_setup_errors(callback: Callback, match: str, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [], max_steps=1)
    with pytest.raises(ValueError, match=match):
        callback.setup(trainer, Tiny(), "fit")


@pytest.mark.parametrize("callback", [ActivationMonitor(), GradientMonitor(), FilterMonitor()])
def test_save_before_anything_recorded(callback: Any, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"\.save: "):
        callback.save(tmp_path / "x.png")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        (
            "ActivationMonitor",
            {"layers": "enc(oder"},
            r"ActivationMonitor: layers='enc\(oder' is not a valid regex \(missing \), .*\); "
            r"use 'activations' "
            r"or fix",
        ),
        (
            "GradientMonitor",
            {"params": "[head"},
            r"GradientMonitor: params='\[head' is not a valid regex .*; use 'weights', 'all' or fix the "
            r"pattern",
        ),
        (
            "Diagnose",
            {"layers": "*relu"},
            r"Diagnose: layers='\*relu' is not a valid regex .*; use 'activations' or fix the pattern",
        ),
    ],
)
def test_bad_selector_regex_raises_in_every_monitor(name: str, kwargs: dict, match: str) -> None:
    import lightkit.callbacks

    with pytest.raises(ValueError, match=match):
        getattr(lightkit.callbacks, name)(**kwargs)
