"""``LRRangeTest``: exact restore, group ratios, apply, plot + W&B image, resume, errors, DDP, ``lr_find`` command."""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.lr_range_test import LRRangeTest, _figure
from lightkit.functional.lr_suggest import (
    SweepEdgeWarning,
    filter_losses,
    range_test_lr,
    smooth_losses,
    suggest,
)
from lightkit.models.classifier import ImageClassifier

SWEEP = {"num_steps": 6, "start_lr": 1e-5, "end_lr": 1.0}


def _model(**kw: Any) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1, dropout=0.2, **kw)


def _loader(n: int = 24, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=True)


def _fit(model: LightningModule, callbacks: list[Callback], tmp_path: Path, max_steps: int = 3,
         loader: DataLoader | None = None, ckpt_path: str | None = None, **kw: Any) -> Trainer:
    trainer = Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks,
                      limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                      **{"logger": False, "enable_checkpointing": False, **kw})
    torch.manual_seed(1)  # the same data order and dropout masks in every fit
    trainer.fit(model, loader or _loader(), ckpt_path=ckpt_path)
    return trainer


def _lrs(trainer: Trainer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}


class _Discriminative(Callback):
    """Encoder groups at 0.1x the head (before the sweep); records every optimizer step's group LRs."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        for g in optimizer.param_groups:
            if g["group"] != "head":
                g["lr"] *= 0.1
        optimizer.register_step_pre_hook(lambda opt, *_: self.steps.append({g["name"]: g["lr"]
                                                                            for g in opt.param_groups}))


@pytest.mark.parametrize("scheduler", [None, "onecycle"])
def test_fit_after_sweep_is_bit_identical(scheduler: str | None, tmp_path: Path) -> None:
    kw = {"lr_scheduler": functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01)} if scheduler else {}
    plain, swept = _model(**kw), _model(**kw)
    t_plain = _fit(plain, [], tmp_path / "a")
    callback = LRRangeTest(**SWEEP)
    t_swept = _fit(swept, [callback], tmp_path / "b")
    assert callback.results is not None and len(callback.results["lrs"]) == 6
    for (name, a), b in zip(plain.state_dict().items(), swept.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights and BN statistics
    opt_a, opt_b = t_plain.optimizers[0].state_dict(), t_swept.optimizers[0].state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for i, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][i][key])
    if scheduler:
        assert (t_plain.lr_scheduler_configs[0].scheduler.state_dict()
                == t_swept.lr_scheduler_configs[0].scheduler.state_dict())


def test_rng_and_pause_flags_restored(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Probe(Callback):
        def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
            seen.setdefault("rng", torch.get_rng_state())
            seen["flags"] = (getattr(pl_module, "lightkit_pause_augment", None),
                             getattr(pl_module, "lightkit_pause_monitor", None))

    _fit(_model(), [LRRangeTest(**SWEEP), Probe()], tmp_path / "b", max_steps=1)
    rng_swept = seen.pop("rng")
    _fit(_model(), [Probe()], tmp_path / "a", max_steps=1)
    assert torch.equal(rng_swept, seen["rng"])
    assert seen["flags"] == (None, None)


def test_pause_flags_set_during_sweep(tmp_path: Path) -> None:
    flags: list[tuple[Any, Any]] = []

    class Recording(ImageClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            flags.append((getattr(self, "lightkit_pause_augment", False),
                          getattr(self, "lightkit_pause_monitor", False)))
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    model = Recording(encoder="test_resnet", num_classes=10, in_chans=1)
    _fit(model, [LRRangeTest(**SWEEP)], tmp_path, max_steps=1)
    assert flags[:6] == [(True, True)] * 6 and flags[6] == (False, False)


def test_groups_keep_their_ratio_and_suggestion_is_applied(tmp_path: Path) -> None:
    disc = _Discriminative()
    callback = LRRangeTest(**SWEEP, apply=True)
    trainer = _fit(_model(), [disc, callback], tmp_path, max_steps=1)
    res = callback.results
    assert len(disc.steps) == 6 + 1
    for step, lr in zip(disc.steps[:6], res["lrs"], strict=True):
        assert step["head"] == pytest.approx(lr)
        for name, value in step.items():
            assert value == pytest.approx(lr * (1.0 if name.startswith("head") else 0.1))
    applied = _lrs(trainer)
    assert applied["head"] == pytest.approx(res["lr"]) == pytest.approx(res["suggestions"]["robust_valley"])
    assert applied["encoder.stem"] == pytest.approx(0.1 * res["lr"])
    assert applied == pytest.approx(res["group_lrs"])


def test_one_named_group_is_swept_alone(tmp_path: Path) -> None:
    disc = _Discriminative()
    callback = LRRangeTest(**SWEEP, group="head", apply=True, suggestion="minimum")
    trainer = _fit(_model(), [disc, callback], tmp_path, max_steps=1)
    for step, lr in zip(disc.steps[:6], callback.results["lrs"], strict=True):
        assert step["head"] == pytest.approx(lr) and step["head/no_decay"] == pytest.approx(lr)
        assert all(v == 0 for k, v in step.items() if not k.startswith("head"))
    applied = _lrs(trainer)
    assert applied["head"] == pytest.approx(callback.results["suggestions"]["minimum"])
    assert applied["encoder.stem"] == pytest.approx(1e-4)  # AdamW's default 1e-3, times 0.1, untouched


def test_apply_scales_a_schedule(tmp_path: Path) -> None:
    model = _model(lr_scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01))
    callback = LRRangeTest(**SWEEP, apply=True)
    trainer = _fit(model, [callback], tmp_path, max_steps=1)
    group = trainer.optimizers[0].param_groups[-1]
    assert group["max_lr"] == pytest.approx(callback.results["lr"])


def test_plot_file_and_wandb_image(tmp_path: Path) -> None:
    from lightkit.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    callback = LRRangeTest(**SWEEP)
    trainer = _fit(_model(), [callback], tmp_path, max_steps=1, logger=logger)
    plot = Path(callback.results["plot"])
    assert plot.name == "lr_find.png" and plot.exists() and plot.stat().st_size > 1000
    logger.experiment.finish()
    images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/lr_find/plot_*.png"))
    assert images, sorted(str(p) for p in tmp_path.rglob("*"))
    assert trainer.global_step == 1


def test_prints_table_and_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    callback = LRRangeTest(**SWEEP)
    _fit(_model(), [callback], tmp_path, max_steps=1)
    out = capsys.readouterr().out
    assert "robust_valley (chosen)" in out and "steepest" in out and "minimum" in out
    assert f"--model.init_args.optimizer.init_args.lr={callback.results['lr']:.3g}" in out
    assert (tmp_path / "lr_find.png").exists()


def _record(losses: list[float]) -> dict[str, list[float]]:
    lrs = [range_test_lr(i / 99, 1e-7, 10.0) for i in range(len(losses))]
    return {"lrs": lrs, "losses": losses, "smoothed": smooth_losses(losses)}


def test_edge_answer_becomes_a_rank_zero_warning() -> None:
    # The loss still falls at the sweep's last point: minimum and steepest are at the edge.
    losses = [2.3] * 30 + [2.3 - 0.03 * i for i in range(60)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    callback = LRRangeTest()
    with pytest.warns(SweepEdgeWarning,
                      match=r"LRRangeTest: minimum: lr=.* lies at the end of the sweep .* Raise end_lr"):
        res = callback._suggest(_record(losses), optimizer, [1.0])
    assert any(m.startswith("minimum: lr=") for m in res["warnings"])
    assert res["lr"] == res["suggestions"]["robust_valley"]


def test_plot_clips_a_planted_spike_and_labels_each_suggestion() -> None:
    # A recorded MNIST-5k sweep shape: plateau 2.6, valley 0.7 near lr 0.05, divergence; spikes planted
    # at the first step (60) and in the divergence (18).
    losses = [2.6] * 45 + [2.6 - 1.9 * i / 30 for i in range(30)] + [0.7 + 0.25 * i for i in range(15)]
    losses[0], losses[80] = 60.0, 18.0
    res = {**_record(losses), "filtered": filter_losses(losses), "clr": None, "suggestion": "robust_valley"}
    res["suggestions"] = suggest(res["lrs"], res["smoothed"], raw=losses)
    res["lr"] = res["suggestions"]["robust_valley"]
    ax = _figure(res).axes[0]
    bottom, top = ax.get_ylim()
    assert 2.6 < top < 5.0  # the plateau and the turn into divergence are in, the spikes (60, 18) are out
    assert 0.5 < bottom < min(res["filtered"])  # just below the filtered minimum
    labels = {t.get_text() for t in ax.texts}
    assert {f"{name} {lr:.2g}" for name, lr in res["suggestions"].items()} <= labels


def test_resume_does_not_sweep_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = LRRangeTest(**SWEEP, apply=True)
    trainer = _fit(_model(), [first], tmp_path, max_steps=1)
    ckpt = tmp_path / "crash.ckpt"
    trainer.save_checkpoint(ckpt)
    assert first.state_dict()["results"] == first.results

    def boom(*args: Any) -> None:
        raise AssertionError("swept again after resume")

    second = LRRangeTest(**SWEEP, apply=True)
    monkeypatch.setattr(second, "_sweep", boom)
    trainer2 = _fit(_model(), [second], tmp_path, max_steps=2, ckpt_path=str(ckpt))
    assert second.results == first.results
    assert _lrs(trainer2)["head"] == pytest.approx(first.results["lr"])


def test_short_loader_is_cycled_with_an_info_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A small folder (the user-folder recipe: 100 steps over 2-5 batches) cycles its loader by design: an info
    # line, not a warning that tells the user to undo the recipe.
    callback = LRRangeTest(**SWEEP)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        _fit(_model(), [callback], tmp_path, max_steps=1, loader=_loader(8, 4))
    assert len(callback.results["lrs"]) == 6
    assert [r.getMessage() for r in caplog.records if "cycles them" in r.getMessage()] == [
        "LRRangeTest: the train loader has 2 batches, fewer than num_steps=6; the sweep cycles them (up to 3 passes)."
    ]
    assert not [w for w in caught if "batches" in str(w.message)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, r"need 0 < start_lr < end_lr, got start_lr=1.0"),
        ({"num_steps": 1}, r"num_steps=1 must be >= 2"),
        ({"mode": "cubic"}, r"mode='cubic'; choose 'exponential' or 'linear'"),
        ({"smoothing": 1.0}, r"smoothing=1.0 must be in \[0, 1\)"),
        ({"diverge_factor": 1.0}, r"diverge_factor=1.0 must be > 1"),
        ({"suggestion": "best"},
         r"suggestion='best'; choose one of \['robust_valley', 'valley', 'steepest', 'minimum'\]"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LRRangeTest(**kwargs)


def test_nan_at_first_step(tmp_path: Path) -> None:
    class NaNModel(ImageClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return super().training_step(batch, batch_idx) * float("nan")

    torch.manual_seed(0)
    with pytest.raises(RuntimeError,
                       match=r"loss is nan at the first step \(lr=1e-05\); lower start_lr \(e.g. 1e-07\)"):
        _fit(NaNModel(encoder="test_resnet", num_classes=10, in_chans=1), [LRRangeTest(**SWEEP)], tmp_path)


def test_too_few_steps_for_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"3 usable sweep steps are too few for a suggestion .* Lower end_lr"):
        _fit(_model(), [LRRangeTest(num_steps=3)], tmp_path)


def test_no_trainable_parameters(tmp_path: Path) -> None:
    model = _model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"no trainable parameters .* unfreeze a layer group"):
        _fit(model, [LRRangeTest(**SWEEP)], tmp_path)


def test_unknown_group(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"group='neck' is not an optimizer group; choose one of \[.*'head'"):
        _fit(_model(), [LRRangeTest(**SWEEP, group="neck")], tmp_path)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_ranks_agree(tmp_path: Path) -> None:
    from tests.helpers.ddp import load_ranks, run_ddp_script

    run_ddp_script(tmp_path, """
        from torch.utils.data import DataLoader, TensorDataset
        from lightkit.callbacks.lr_range_test import LRRangeTest
        from lightkit.models.classifier import ImageClassifier
        seed_everything(0)
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
        callback = LRRangeTest(num_steps=6, start_lr=1e-5, end_lr=1.0, apply=True)
        trainer = ddp_trainer(callbacks=[callback], max_steps=1, limit_val_batches=0)
        trainer.fit(model, DataLoader(data, batch_size=4, shuffle=True))
        save_rank({"results": callback.results, "lr": trainer.optimizers[0].param_groups[-1]["lr"],
                   "weights": {k: v.detach().clone() for k, v in model.named_parameters()}})
    """)
    r0, r1 = load_ranks(tmp_path)
    assert r0["results"]["losses"] == r1["results"]["losses"]
    assert r0["results"]["suggestions"] == r1["results"]["suggestions"]
    assert r0["lr"] == r1["lr"] == r0["results"]["group_lrs"]["head/no_decay"]
    for key, value in r0["weights"].items():  # parameters; BN running stats are per rank under DDP
        assert torch.equal(value, r1["weights"][key]), key


def test_lr_find_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lightkit.cli import main

    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "default_root_dir": str(tmp_path),
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"class_path": "lightkit.models.ImageClassifier", "init_args": {"encoder": "test_resnet"}},
        "data": {"class_path": "lightkit.data.DigitsDataModule", "init_args": {"image_size": 32, "batch_size": 16}},
    }
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["lr_find", "--config", str(path), "--lr_find.num_steps", "8", "--lr_find.end_lr", "1.0"]) is None
    out = capsys.readouterr().out
    assert "LR range test (8 steps)" in out and "--model.init_args.optimizer.init_args.lr=" in out
    assert (tmp_path / "lr_find.png").exists()
    assert not list(tmp_path.rglob("*.ckpt"))  # no training happened
