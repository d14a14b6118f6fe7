"""``lightkit.sanity`` and the ``sanity`` command: a healthy setup passes, each planted fault fails with its hint."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lightkit.cli import main
from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier
from lightkit.sanity import (
    LR_KEY,
    SanityReport,
    gradient_check,
    initial_loss_check,
    lr_check,
    overfit_check,
    run_sanity,
    sample_batches,
)

# Measured on test_resnet / digits at 32 px, AdamW lr 1e-3: 2 batches of 8 are overfitted in < 10 steps,
# and the loss falls > 5 % within 10 steps; the limits below leave a margin.
FAST = {"overfit_steps": 30, "lr_factors": [1.0], "lr_steps": 10}


def tiny(lr: float = 1e-3, cls: type[ImageClassifier] = ImageClassifier, **kwargs: object) -> ImageClassifier:
    torch.manual_seed(0)
    return cls(encoder="test_resnet", num_classes=10, in_chans=1, dropout=0.2, label_smoothing=0.1,
               optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.05), **kwargs)


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    dm = DigitsDataModule(batch_size=8, image_size=32)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return sample_batches(loader, 2, 8), sample_batches(loader, 4)


def test_healthy_setup_passes_and_leaves_the_model_alone(data: tuple[list, list]) -> None:
    sample, train = data
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = run_sanity(model, sample, train, **FAST)
    assert report.passed, [(c.name, c.message, c.hint) for c in report.failed()]
    assert [c.name for c in report.checks] == ["initial_loss", "gradients", "overfit", "lr"]
    assert all(c.hint == "" for c in report.checks)
    assert all(0 < c.measured["seconds"] < 600 for c in report.checks)  # each check's cost, for sanity.json
    # timm's zero-initialised last BN gammas are recognised, not reported as missing gradients
    assert report["gradients"].measured["zero_init"] and not report["gradients"].measured["no_gradient"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    json.dumps(report.to_dict())


class _Uncopyable:
    """Stands for what a LightningCLI optimizer factory holds: the CLI, its Trainer, data and loggers."""

    def __call__(self, *args: object) -> None:
        raise AssertionError("never called by the checks")

    def __deepcopy__(self, memo: dict) -> _Uncopyable:
        raise AssertionError("the checks deep-copied the factory (and the trainer and W&B run behind it)")


def test_checks_copy_the_network_not_its_factories_or_trainer(data: tuple[list, list]) -> None:
    sample, train = data
    model = tiny()
    model.scheduler_holder = _Uncopyable()  # any callable attribute is shared with the copies
    report = run_sanity(model, sample, train, **FAST)
    assert report.passed and [c.name for c in report.checks] == ["initial_loss", "gradients", "overfit", "lr"]


class _ForwardThroughAttribute(ImageClassifier):
    """A module whose forward calls a bound method stored as an attribute (``self.impl = self._impl``)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.impl = self._impl

    def _impl(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.impl(x)


def test_checks_copy_bound_methods_with_the_network(data: tuple[list, list]) -> None:
    """Shared callables are factories, not the module's own methods: the copy must run its own weights."""
    sample, train = data
    model = tiny(cls=_ForwardThroughAttribute)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = run_sanity(model, sample, train, **FAST)
    assert report["overfit"].passed and report["gradients"].passed, [c.message for c in report.checks]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_huge_head_bias_fails_initial_loss(data: tuple[list, list]) -> None:
    model = tiny()
    with torch.no_grad():
        model.head[-1].bias[0] = 50.0
    result = initial_loss_check(model, data[0])
    assert not result.passed and result.measured["loss"] > 10
    assert "model.init_args.head_init" in result.hint


def test_below_chance_passes_only_with_a_pretrained_encoder(data: tuple[list, list]) -> None:
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(15):  # a few steps on the sample: the loss falls well below ln(10)
        for x, y in data[0]:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    result = initial_loss_check(model, data[0])
    assert not result.passed and result.measured["loss"] < 1.5 and "below chance" in result.hint
    model.hparams["pretrained"] = "encoder.safetensors"
    result = initial_loss_check(model, data[0])
    assert result.passed and result.measured["pretrained"] and "pretrained encoder" in result.message
    # weights by channels: the entry for the model's own channels decides
    model.hparams["in_chans"] = 1
    model.hparams["pretrained"] = {3: "encoder.safetensors", 1: False}
    assert not initial_loss_check(model, data[0]).passed
    model.hparams["pretrained"] = {"3": False, "1": "encoder.safetensors"}
    assert initial_loss_check(model, data[0]).passed


def test_label_smoothing_keeps_ln_c_expected(data: tuple[list, list]) -> None:
    model = tiny()
    with torch.no_grad():
        model.head[-1].weight.zero_()  # exactly uniform predictions
    for eps in (0.0, 0.3):
        result = initial_loss_check(model, data[0], tolerance=1e-3, label_smoothing=eps)
        assert result.passed and result.measured["loss"] == pytest.approx(result.measured["expected"], rel=1e-5)


def test_lr_zero_cannot_overfit_nor_lower_the_loss(data: tuple[list, list]) -> None:
    sample, train = data
    result = overfit_check(tiny(lr=0.0), sample, steps=4)
    assert not result.passed and f"`{LR_KEY}`" in result.hint and "is 0" in result.hint
    result = lr_check(tiny(lr=0.0), train, factors=[1.0], steps=5)
    assert not result.passed and "none of these LRs" in result.hint and LR_KEY in result.hint


def test_too_low_lr_hint_names_the_lr_that_works(data: tuple[list, list]) -> None:
    result = lr_check(tiny(lr=1e-7), data[1], factors=[1.0, 1e4], steps=10)
    assert not result.passed
    assert f"`{LR_KEY}: 0.001`" in result.hint


def test_frozen_model_fails_overfit_and_gradients(data: tuple[list, list]) -> None:
    model = tiny()
    model.requires_grad_(False)
    report = run_sanity(model, data[0], data[1], checks=["gradients", "overfit", "lr"], **FAST)
    assert [c.passed for c in report.checks] == [False, False, False]
    assert all("requires_grad=False" in c.hint for c in report.checks)


class DetachedBranch(ImageClassifier):
    """A planted bug: a side branch whose output is detached, so it never learns."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.side = nn.Linear(self.encoder.num_features, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return self.head(features) + self.side(features).detach()


def test_detached_branch_fails_gradients(data: tuple[list, list]) -> None:
    result = gradient_check(tiny(cls=DetachedBranch), data[0][0])
    assert not result.passed
    assert result.measured["no_gradient"] == ["side.weight", "side.bias"]
    assert "detach" in result.hint


# -- the command ---------------------------------------------------------------------------------
def _config(tmp_path: Path) -> str:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "logger": False, "default_root_dir": str(tmp_path / "run"),
                    "enable_progress_bar": False},
        "model": {"class_path": "lightkit.models.ImageClassifier",
                  "init_args": {"encoder": "test_resnet", "label_smoothing": 0.1,
                                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}}}},
        "data": {"class_path": "lightkit.data.DigitsDataModule",
                 "init_args": {"batch_size": 8, "image_size": 32, "augmentations": "light"}},
        "sanity": {"batch_size": 8, "overfit_steps": 30, "lr_factors": [1.0], "lr_steps": 40},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_command_passes_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sanity", "--config", _config(tmp_path)]) is None
    report = json.loads((tmp_path / "run" / "sanity.json").read_text())
    assert report["passed"] and len(report["checks"]) == 5
    baseline = report["checks"][-1]
    assert baseline["name"] == "pixel_baseline" and 0.9 < baseline["measured"]["test_acc"] <= 1.0  # digits: ~0.96
    assert "logistic regression on 8x8 pixels" in baseline["message"]
    assert all(c["measured"]["seconds"] > 0 for c in report["checks"])
    assert report["seconds"] >= sum(c["measured"]["seconds"] for c in report["checks"])  # set-up and sampling too
    assert "lightkit sanity" in capsys.readouterr().out


def test_command_starts_no_wandb_run(tmp_path: Path) -> None:
    """sanity logs nothing to W&B: its loggers stay unstarted (a W&B run cost 1.7 s of a 16 s command)."""
    logger = {"class_path": "lightkit.loggers.WandbLogger",
              "init_args": {"project": "lightkit", "save_dir": str(tmp_path / "run"), "offline": True}}
    run = tmp_path / "folder"
    assert main(["sanity", "--config", _config(tmp_path), f"--trainer.logger={json.dumps([logger])}",
                 f"--run_dir={run}"]) is None
    assert json.loads((run / "sanity.json").read_text())["passed"]
    assert not list(tmp_path.rglob("wandb"))


def test_command_fails_with_nonzero_exit(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["sanity", "--config", _config(tmp_path), "--model.init_args.optimizer.init_args.lr=0",
              "--sanity.checks=[overfit]", "--sanity.overfit_steps=3", f"--sanity.output={out}"])
    assert exit_info.value.code == 1
    report = json.loads(out.read_text())
    assert not report["passed"] and LR_KEY in report["checks"][0]["hint"]


@pytest.mark.parametrize(("option", "match"), [
    ("--sanity.overfit_batches=0", "overfit_batches=0 must be >= 1"),
    ("--sanity.batch_size=0", "batch_size=0 must be >= 1"),
    ("--sanity.lr_factors=[0.1]", "must be positive and include 1.0"),
])
def test_command_rejects_bad_options(tmp_path: Path, option: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        main(["sanity", "--config", _config(tmp_path), option])


# -- error paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"checks": ["speed"]}, r"checks=\['speed'\]; give one or more distinct names"),
    ({"checks": ["lr", "lr"]}, "distinct names"),
    ({"checks": []}, "give one or more"),
    ({"loss_tolerance": 0.0}, "tolerance=0.0 must be > 0"),
    ({"overfit_steps": 0}, "steps=0 must be >= 1"),
    ({"overfit_accuracy": 1.5}, r"target_accuracy=1.5 must be in \(0, 1\]"),
    ({"lr": -1.0}, "lr=-1.0 must be >= 0"),
    ({"lr_factors": [0.1, 10.0]}, "must be positive and include 1.0"),
    ({"lr_factors": [1.0, -1.0]}, "must be positive"),
    ({"lr_steps": 4}, "steps=4 must be >= 5"),
    ({"min_decrease": 1.0}, r"min_decrease=1.0 must be in \[0, 1\)"),
    ({"label_smoothing": 1.0}, r"label_smoothing=1.0 must be in \[0, 1\)"),
])
def test_run_sanity_raises(data: tuple[list, list], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_sanity(tiny(), data[0], data[1], **kwargs)


def test_other_raises(data: tuple[list, list]) -> None:
    sample, train = data
    with pytest.raises(ValueError, match="the sample holds no batches"):
        run_sanity(tiny(), [], train)
    with pytest.raises(ValueError, match="num_batches=0 must be >= 1"):
        sample_batches(train, 0)
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        sample_batches(train, 1, 0)
    with pytest.raises(ValueError, match="fewer than num_batches \\* batch_size = 800"):
        sample_batches(train, 100, 8)
    with pytest.raises(ValueError, match="has 4 batches, fewer than num_batches=5"):
        sample_batches(train, 5)
    with pytest.raises(ValueError, match="initial_loss_check: no batches"):
        initial_loss_check(tiny(), [])
    with pytest.raises(ValueError, match="overfit_check: no batches"):
        overfit_check(tiny(), [])
    with pytest.raises(ValueError, match="the batches are empty"):
        lr_check(tiny(), [], steps=5)
    with pytest.raises(TypeError, match="has no optimizer_factory; pass optimizer="):
        overfit_check(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)), sample, steps=1)
    with pytest.raises(TypeError, match=r"returned \(8, 10, 1\); the checks need class logits"):
        initial_loss_check(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10), nn.Unflatten(1, (10, 1))), sample)
    with pytest.raises(KeyError, match="no check 'speed'"):
        SanityReport([])["speed"]


@pytest.mark.slow
def test_quickstart_config_passes(tmp_path: Path) -> None:
    """The shipped quickstart (resnet10t, MNIST-5k weights, label smoothing) passes every check."""
    out = tmp_path / "quickstart_sanity.json"
    repo = Path(__file__).resolve().parents[1]
    assert main(["sanity", "--config", str(repo / "configs/quickstart.yaml"), "--trainer.logger=false",
                 f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]", "--sanity.lr_steps=30",
                 f"--sanity.output={out}"]) is None
    report = json.loads(out.read_text())
    assert report["passed"], report
    assert [c["name"] for c in report["checks"]] == ["initial_loss", "gradients", "overfit", "lr", "pixel_baseline"]


# -- fit --sanity_first --------------------------------------------------------------------------------
def _fit(tmp_path: Path, name: str, *extra: str) -> object:
    run = tmp_path / name
    return main(["fit", "--config", _config(tmp_path), "--trainer.max_steps=6", "--trainer.limit_val_batches=2",
                 "--trainer.limit_test_batches=2", f"--run_dir={run}", "--pixel_baseline=true", *extra])


def test_sanity_first_checks_then_trains_the_same_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``fit --sanity_first``: the report lands in the run folder, and the training that follows is
    bit-identical to a fit without it (augmentation back on, RNG untouched, the checks' copies only)."""
    plain = _fit(tmp_path, "plain")
    checked = _fit(tmp_path, "checked", "--sanity_first=true")
    report = json.loads((tmp_path / "checked" / "sanity.json").read_text())
    assert report["passed"] and [c["name"] for c in report["checks"]][-1] == "pixel_baseline"
    assert not (tmp_path / "plain" / "sanity.json").exists()
    assert checked.datamodule.augmentations == "light"
    assert checked.trainer.global_step == plain.trainer.global_step == 6
    a, b = plain.model.state_dict(), checked.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The baseline fitted before training is the one the summary reports (not fitted twice).
    assert checked._preflight_baseline is not None
    assert checked._preflight_baseline.test_acc == pytest.approx(report["checks"][-1]["measured"]["test_acc"])
    assert "lightkit sanity" in capsys.readouterr().out


def test_sanity_first_failure_stops_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failed check ends the command with one line and exit 1; no step is taken, no checkpoint written."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", _config(tmp_path), "--sanity_first=true", "--model.init_args.optimizer.init_args.lr=0",
              "--sanity.checks=[overfit]", "--sanity.overfit_steps=3", f"--run_dir={tmp_path / 'bad'}"], edge=True)
    assert exit_info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "sanity_first: 1 check(s) failed before training (overfit" in err[0]
    assert "Nothing was trained" in err[0] and LR_KEY in err[0]
    assert not json.loads((tmp_path / "bad" / "sanity.json").read_text())["passed"]
    assert not list((tmp_path / "bad").rglob("*.ckpt"))


@pytest.mark.slow
def test_sanity_first_under_ddp(tmp_path: Path) -> None:
    """2-process CPU DDP: each rank checks (same seed, same verdict), rank zero writes one report and
    the fit runs; a failing check stops rank zero before any other process is launched (no hang)."""
    from tests.helpers.ddp import run_ddp_script

    config = _config(tmp_path)
    body = f'''
    from lightkit.cli import main
    common = ["fit", "--config", {config!r}, "--trainer.devices=2", "--trainer.strategy=ddp",
              "--trainer.max_steps=4", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
              "--sanity_first=true", "--sanity.checks=[initial_loss,gradients,overfit]"]
    cli = main([*common, "--run_dir", OUT + "/good"], edge=False)
    save_rank({{"step": cli.trainer.global_step, "world": cli.trainer.world_size}}, "good")
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        try:
            main([*common, "--model.init_args.optimizer.init_args.lr=0", "--sanity.overfit_steps=3",
                  "--run_dir", OUT + "/bad"], edge=True)
        except SystemExit as err:
            open(os.path.join(OUT, "bad_exit.txt"), "w").write(str(err.code))
    '''
    run_ddp_script(tmp_path, body, timeout=600)
    from tests.helpers.ddp import load_ranks

    assert load_ranks(tmp_path, "good") == [{"step": 4, "world": 2}] * 2
    report = json.loads((tmp_path / "good" / "sanity.json").read_text())
    assert report["passed"] and [c["name"] for c in report["checks"]][:3] == ["initial_loss", "gradients", "overfit"]
    assert (tmp_path / "bad_exit.txt").read_text() == "1"
    assert not json.loads((tmp_path / "bad" / "sanity.json").read_text())["passed"]
    assert not list((tmp_path / "bad").rglob("*.ckpt"))
