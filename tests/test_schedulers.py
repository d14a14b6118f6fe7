"""lightkit.lr_schedulers: same oracle as the functional form, per-group ratios, warmup, momentum, resume,
errors."""

from __future__ import annotations

import io
import math
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightkit import lr_schedulers as L
from lightkit.functional import schedules as S

T = 60  # total optimizer steps in these tests
SPE = 10  # steps per epoch


def _optimizer(kind: str = "sgd") -> torch.optim.Optimizer:
    """Two groups with a 10x LR ratio, as discriminative LRs give."""
    groups = [
        {"params": [torch.nn.Parameter(torch.ones(3))], "lr": 0.1, "name": "head"},
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.01, "name": "encoder.stem"},
    ]
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True)
    if kind == "adamw":
        return torch.optim.AdamW(groups, betas=(0.9, 0.99))
    return torch.optim.Adagrad(groups)


def _run(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[list[float]]:
    """LRs used at each of ``steps`` optimizer steps, on a toy loss so the optimizer really steps."""
    opt = scheduler.optimizer
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.zero_grad()
        sum((p**2).sum() for g in opt.param_groups for p in g["params"]).backward()
        opt.step()
        scheduler.step()
    return out


# (class, init kwargs, functional oracle over T steps). One oracle shared with tests/functional.
CASES: dict[str, tuple[type, dict[str, Any], S.Schedule]] = {
    "constant": (L.Constant, {}, S.constant),
    "step": (L.StepDecay, {"step_size": "2ep", "gamma": 0.5}, partial(S.step_decay, step_size=20, gamma=0.5)),
    "multistep": (
        L.MultiStep,
        {"milestones": [0.5, "4ep", 55]},
        partial(S.multistep, milestones=[30, 40, 55]),
    ),
    "linear": (L.Linear, {"final_factor": 0.1}, partial(S.linear, total_steps=T, final_factor=0.1)),
    "inverse_sqrt": (L.InverseSqrt, {"timescale": 15}, partial(S.inverse_sqrt, timescale=15)),
    "cosine": (L.Cosine, {}, partial(S.cosine, total_steps=T)),
    "exponential": (
        L.Exponential,
        {"gamma": 0.5, "every": "1ep"},
        partial(S.exponential, gamma=0.5, every=10),
    ),
    "sgdr": (
        L.SGDR,
        {"period": 0.1, "period_mult": 2, "peak_decay": 0.7},
        partial(S.sgdr, period=6, period_mult=2, peak_decay=0.7),
    ),
    "cyclic": (
        L.Cyclic,
        {"step_size": 7, "mode": "triangular2"},
        partial(S.cyclic, step_size=7, mode="triangular2"),
    ),
    "one_cycle": (L.OneCycle, {"pct_start": 0.25}, partial(S.one_cycle, total_steps=T, pct_start=0.25)),
    # warmup 0 -> 1 over 6 steps, cosine to 0.05 over 3 epochs, flat over a fifth of training, then held
    "phases": (
        L.Phases,
        {
            "phases": [
                {"duration": 6, "start": 0.0, "end": 1.0, "shape": "linear"},
                {"duration": "3ep", "start": 1.0, "end": 0.05},
                {"duration": 0.2, "start": 0.05, "end": 0.05},
            ]
        },
        S.combine(
            [6, 30, 12],
            [
                partial(S.anneal, total_steps=6, start=0.0, end=1.0, shape="linear"),
                partial(S.anneal, total_steps=30, start=1.0, end=0.05),
                partial(S.anneal, total_steps=12, start=0.05, end=0.05),
            ],
        ),
    ),
}


def _make(
    key: str, opt: torch.optim.Optimizer | None = None, **extra: Any
) -> torch.optim.lr_scheduler.LRScheduler:
    cls, kwargs, _ = CASES[key]
    return cls(opt or _optimizer(), **{**kwargs, **extra}, total_steps=T, steps_per_epoch=SPE)


@pytest.mark.parametrize("key", list(CASES))
def test_matches_functional_and_keeps_group_ratios(key: str) -> None:
    _, _, oracle = CASES[key]
    sched = _make(key)
    assert sched.interval == "step"
    lrs = _run(sched, T)
    assert [row[0] for row in lrs] == pytest.approx([0.1 * oracle(t) for t in range(T)], rel=1e-12, abs=1e-15)
    assert all(row[0] == pytest.approx(10 * row[1], rel=1e-12) for row in lrs)  # discriminative ratio kept


@pytest.mark.parametrize("key", list(CASES))
@pytest.mark.parametrize("warmup", [6, 0.1, "0.6ep"])  # the same 6 steps, in steps, fraction and epochs
def test_warmup_composes_with_each(key: str, warmup: Any) -> None:
    cls, kwargs, _ = CASES[key]
    sched = _make(key, warmup=warmup)
    inner = sched.schedule()  # the schedule proper, over the T - 6 steps left
    lrs = [row[0] for row in _run(sched, T)]
    assert lrs[:7] == pytest.approx([0.1 * inner(0) * t / 6 for t in range(7)], abs=1e-15)
    assert lrs[6:] == pytest.approx([0.1 * inner(t) for t in range(T - 6)], rel=1e-12, abs=1e-15)
    if key in ("linear", "cosine", "one_cycle"):  # decays end at the end of training, after the warmup
        assert inner.keywords["total_steps"] == T - 6


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_one_cycle_cycles_momentum_inversely(kind: str) -> None:
    opt = _optimizer(kind)
    sched = L.OneCycle(opt, total_steps=T, pct_start=0.25)
    torch_opt = _optimizer(kind)
    oracle = torch.optim.lr_scheduler.OneCycleLR(torch_opt, max_lr=[0.1, 0.01], total_steps=T, pct_start=0.25)
    key = "momentum" if kind == "sgd" else "betas"
    moms, ref = [], []
    for _ in range(T):
        moms.append([g[key] for g in opt.param_groups])
        ref.append([g[key] for g in torch_opt.param_groups])
        for o, s in ((opt, sched), (torch_opt, oracle)):
            o.step()
            s.step()
    first = [m[0] if kind == "sgd" else m[0][0] for m in moms]
    assert first == pytest.approx([m[0] if kind == "sgd" else m[0][0] for m in ref], abs=1e-12)
    assert (
        first[0] == pytest.approx(0.95)
        and min(first) == pytest.approx(0.85, abs=1e-3)
        and first[-1] == pytest.approx(0.95, abs=1e-3)
    )
    assert all(m[0] == m[1] for m in moms)  # every group
    if kind == "adamw":
        assert all(m[0][1] == 0.99 for m in moms)  # beta2 untouched


def test_one_cycle_warmup_holds_momentum() -> None:
    opt = _optimizer()
    sched = L.OneCycle(opt, total_steps=T, warmup=10)
    moms = []
    for _ in range(12):
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert moms[:11] == pytest.approx([0.95] * 11) and moms[11] < 0.95


def test_cycle_momentum_off_leaves_momentum() -> None:
    opt = _optimizer("adagrad")
    sched = L.OneCycle(opt, total_steps=T, cycle_momentum=False)
    _run(sched, 5)
    assert "momentum" not in opt.param_groups[0] and "betas" not in opt.param_groups[0]


def test_durations_in_steps_fraction_and_epochs_agree() -> None:
    runs = [
        _run(L.StepDecay(_optimizer(), step_size=s, total_steps=T, steps_per_epoch=SPE), T)
        for s in (20, 1 / 3, "2ep")
    ]
    assert runs[0] == runs[1] == runs[2]


def test_epoch_interval_for_epoch_policies() -> None:
    sched = L.StepDecay(
        _optimizer(), step_size=2, gamma=0.5, interval="epoch", total_steps=T, steps_per_epoch=SPE
    )
    assert sched.interval == "epoch"
    assert [r[0] for r in _run(sched, 6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    # a fraction of training counts epochs when stepping per epoch: 0.5 of 6 epochs = 3
    cos = L.Cosine(_optimizer(), interval="epoch", total_steps=T, steps_per_epoch=SPE)
    assert cos.schedule().keywords["total_steps"] == 6


@pytest.mark.parametrize("key", list(CASES))
@pytest.mark.parametrize("crash", [1, 17, 41])
def test_resume_gives_the_same_sequence(key: str, crash: int) -> None:
    warm = {"warmup": 5}
    straight = _run(_make(key, **warm), T)

    first = _make(key, **warm)
    before = _run(first, crash)
    buffer = io.BytesIO()
    torch.save({"scheduler": first.state_dict(), "optimizer": first.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what Lightning checkpoints need: plain data only

    # scheduler-only restore is exact too: load_state_dict re-applies the current LR and momentum
    for load_optimizer in (True, False):
        opt = _optimizer()
        resumed = _make(key, opt, **warm)
        if load_optimizer:
            opt.load_state_dict(state["optimizer"])
        resumed.load_state_dict(state["scheduler"])
        assert before + _run(resumed, T - crash) == straight


def test_resume_restores_hyperparameters_from_the_checkpoint() -> None:
    first = L.Cosine(_optimizer(), total_steps=T)
    _run(first, 10)
    other = L.Cosine(_optimizer(), total_steps=2 * T)
    other.load_state_dict(first.state_dict())
    assert other.total_steps == T and other.schedule().keywords["total_steps"] == T


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda o: L.OneCycle(o, interval="epoch", total_steps=T),
            r"OneCycle: interval='epoch' .* Use interval: step",
        ),
        (
            lambda o: L.Cyclic(o, step_size=4, interval="epoch"),
            r"Cyclic: interval='epoch' .* per-step policy",
        ),
        (
            lambda o: L.Cosine(o, warmup=2, interval="epoch", total_steps=T, steps_per_epoch=SPE),
            r"Cosine: interval='epoch' would advance a warmup",
        ),
        (
            lambda o: L.Constant(o, interval="iteration"),
            r"interval='iteration' is not one of 'step', 'epoch'",
        ),
        (lambda o: L.Cosine(o), r"Cosine: cosine decay needs total_steps"),
        (lambda o: L.Constant(o, warmup=0.1), r"warmup=0.1 needs total_steps"),
        (lambda o: L.StepDecay(o, step_size="3ep", total_steps=T), r"step_size='3ep' needs steps_per_epoch"),
        (
            lambda o: L.StepDecay(o, step_size=1.5, total_steps=T),
            r"step_size=1.5 as a float is a fraction .* "
            r"'1.5ep'",
        ),
        (lambda o: L.StepDecay(o, step_size="3 epochs"), r"step_size='3 epochs' is not a duration"),
        (lambda o: L.StepDecay(o, step_size=-2), r"step_size=-2 must be >= 0"),
        (lambda o: L.StepDecay(o, step_size=0), r"step_decay: step_size=0.0 must be > 0"),
        (lambda o: L.MultiStep(o, milestones=[30, 20]), r"milestones=\[30.0, 20.0\] must be"),
        (lambda o: L.Cosine(o, warmup=T, total_steps=T), r"warmup=60 \(60 units\) leaves no training"),
        (lambda o: L.Constant(o, warmup_start=1.5), r"warmup_start=1.5 must be in \[0, 1\]"),
        (lambda o: L.Constant(o, total_steps=0), r"total_steps=0 must be a positive int"),
        (lambda o: L.InverseSqrt(o), r"InverseSqrt: timescale=None uses the warmup length"),
        (lambda o: L.OneCycle(o, total_steps=T, pct_start=0.0), r"pct_start=0.0 must be in \(0, 1\)"),
        (lambda o: L.Cyclic(o, step_size=4, div_factor=0.5), r"div_factor=0.5 must be > 1"),
        (lambda o: L.ReduceOnPlateau(o, factor=1.0), r"ReduceOnPlateau: factor=1.0 must be in \(0, 1\)"),
        (lambda o: L.ReduceOnPlateau(o, monitor=""), r"monitor is empty"),
        (lambda o: L.Phases(o, phases=[]), r"Phases: phases is empty"),
        (lambda o: L.Phases(o, phases=[L.Phase(0)]), r"Phases: phases\[0\].duration=0 is empty"),
        (
            lambda o: L.Phases(o, phases=[L.Phase(0.6), L.Phase(0.5)], total_steps=T),
            r"phases last 66 units "
            r"but the run has 60",
        ),
        (
            lambda o: L.Phases(o, phases=[L.Phase(5), L.Phase(5, shape="step")]),
            r"phases\[1\]: anneal: shape='step' is not one of",
        ),
        (
            lambda o: L.Phases(o, phases=[L.Phase(5, start=0.0, shape="exp")]),
            r"phases\[0\]: anneal: shape='exp' needs start=0.0",
        ),
        (lambda o: L.Phases(o, phases=[L.Phase(5, start=-1.0)]), r"start=-1.0 and end=1.0 must be >= 0"),
    ],
)
def test_raises(make, match: str) -> None:
    opt = _optimizer()
    lrs = [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match=match):
        make(opt)
    assert [g["lr"] for g in opt.param_groups] == lrs and "initial_lr" not in opt.param_groups[0]  # untouched


def test_phase_of_the_wrong_kind_raises() -> None:
    with pytest.raises(TypeError, match=r"phases\[0\]=\{'length': 5\} has unknown keys; use duration, start, "
                                        r"end"):
        L.Phases(_optimizer(), phases=[{"length": 5}])
    with pytest.raises(TypeError, match=r"phases\[1\]=5 is not a Phase or a dict"):
        L.Phases(_optimizer(), phases=[L.Phase(5), 5])


def test_phases_write_warmup_cosine_and_flat_tail() -> None:
    """The schedule with_warmup alone could not express: golden values at the phase boundaries."""
    phases = [L.Phase(0.1, 0.0, 1.0, "linear"), L.Phase(0.7, 1.0, 0.01, "cos"), L.Phase(0.2, 0.01, 0.01)]
    lrs = [row[0] / 0.1 for row in _run(L.Phases(_optimizer(), phases=phases, total_steps=100), 100)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[45] == pytest.approx(0.505) and lrs[80:] == pytest.approx([0.01] * 20)


SCHEDULERS = [getattr(L, n) for n in L.__all__ if isinstance(getattr(L, n), type)
              and issubclass(getattr(L, n), torch.optim.lr_scheduler.LRScheduler)
              and getattr(L, n) not in (L.FactorScheduler, L.DecayToFinal)]


@pytest.mark.parametrize("cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_print_config_and_help_list_every_argument(cls: type, capsys: pytest.CaptureFixture[str]) -> None:
    """The shared tail is declared once (FactorScheduler) and forwarded with **tail: the YAML schema still
    names every argument, with its type and default."""
    import inspect

    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LRSchedulerCallable

    from lightkit._factory import unbound_parameters

    expected = unbound_parameters(cls) - {"optimizer"}
    if issubclass(cls, L.FactorScheduler):
        assert {"warmup", "warmup_start", "interval", "total_steps", "steps_per_epoch"} <= expected
    required = {"step_size": 4, "milestones": [10], "gamma": 0.5, "period": 10, "phases": [{"duration": 5}]}
    own = {k: v for k, v in required.items() if k in inspect.signature(cls).parameters
           and inspect.signature(cls).parameters[k].default is inspect.Parameter.empty}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--s", type=LRSchedulerCallable)
    cfg = parser.parse_args(
        ["--s", f"lightkit.lr_schedulers.{cls.__name__}", *[f"--s.{k}={v}" for k, v in own.items()]]
    )
    dumped = parser.dump(cfg, skip_none=False)
    import yaml

    assert set(yaml.safe_load(dumped)["s"]["init_args"]) == expected
    with pytest.raises(SystemExit):
        parser.parse_args(["--s.help", f"lightkit.lr_schedulers.{cls.__name__}"])
    help_text = capsys.readouterr().out
    assert all(f"--s.{name}" in help_text for name in expected), help_text


def test_old_import_path_still_loads_configs_and_checkpoints() -> None:
    import lightkit.schedulers as old

    assert all(getattr(old, name) is getattr(L, name) for name in L.__all__)
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LRSchedulerCallable

    parser = ArgumentParser()
    parser.add_argument("--s", type=LRSchedulerCallable)
    factory = parser.instantiate(parser.parse_args(["--s", '{"class_path": "lightkit.schedulers.Cosine"}'])).s
    assert isinstance(factory(_optimizer(), total_steps=T), L.Cosine)


def test_one_cycle_needs_momentum_or_flag() -> None:
    with pytest.raises(ValueError, match=r"Adagrad has neither 'momentum' nor 'betas'.*cycle_momentum: "
                                         r"false"):
        L.OneCycle(_optimizer("adagrad"), total_steps=T)


def test_duration_type_error() -> None:
    with pytest.raises(TypeError, match=r"warmup=True must be an int"):
        L.Constant(_optimizer(), warmup=True)


def test_reduce_on_plateau_halves_and_names_monitor() -> None:
    from lightkit.models.classifier import lr_scheduler_config

    opt = _optimizer()
    sched = L.ReduceOnPlateau(opt, monitor="val/acc", mode="max", patience=1)
    assert sched.interval == "epoch" and sched.monitor == "val/acc"
    for acc in (0.5, 0.5, 0.5):
        sched.step(acc)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])
    config = lr_scheduler_config(
        partial(L.ReduceOnPlateau, monitor="val/acc", mode="max"), _optimizer(), None
    )
    assert config["monitor"] == "val/acc" and config["interval"] == "epoch"


class _LrRecorder(Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


class _SaveAt(Callback):
    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_classifier_fit_per_step_and_resume_gives_the_same_lr_sequence(tmp_path: Any) -> None:
    """A straight run through ImageClassifier, and one resumed from a mid-epoch checkpoint (step 4 of 9)."""
    from lightkit.models.classifier import ImageClassifier

    def fit(callbacks: list[Callback], ckpt_path: str | None = None) -> Trainer:
        model = ImageClassifier(
            encoder="test_resnet", num_classes=4, in_chans=1, optimizer=partial(torch.optim.AdamW, lr=0.01),
            lr_scheduler=partial(L.OneCycle, pct_start=0.5, warmup="1ep"),
        )
        data = TensorDataset(torch.randn(12, 1, 32, 32), torch.arange(12) % 4)
        trainer = Trainer(
            max_epochs=3,
            default_root_dir=tmp_path,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            accelerator="cpu",
            callbacks=callbacks,
        )
        trainer.fit(model, DataLoader(data, batch_size=4), ckpt_path=ckpt_path)
        return trainer

    path, crash = str(tmp_path / "crash.ckpt"), 4
    straight = _LrRecorder()
    trainer = fit([straight, _SaveAt(crash, path)])
    config = trainer.lr_scheduler_configs[0]
    sched = config.scheduler
    assert config.interval == "step"
    assert (sched.total_steps, sched.steps_per_epoch, sched.warmup_units) == (9, 3, 3.0)
    assert [r[0] for r in straight.lrs] == pytest.approx([0.01 * sched.factor(t) for t in range(9)])
    assert all(len(set(r)) == 1 for r in straight.lrs)  # one factor for all groups (equal base LRs here)

    resumed = _LrRecorder()
    fit([resumed], ckpt_path=path)
    assert resumed.lrs == straight.lrs[crash:]


def test_classifier_passes_total_steps_to_cli_factories() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LRSchedulerCallable

    from lightkit.models.classifier import lr_scheduler_config

    parser = ArgumentParser()
    parser.add_argument("--lr_scheduler", type=LRSchedulerCallable)
    cfg = parser.parse_args(
        ["--lr_scheduler", '{"class_path": "lightkit.lr_schedulers.Cosine", "init_args": {"warmup": 0.1}}']
    )
    factory = parser.instantiate(cfg).lr_scheduler

    class FakeTrainer:
        estimated_stepping_batches = 40
        max_epochs = 4

    config = lr_scheduler_config(factory, _optimizer(), FakeTrainer())
    assert config["scheduler"].total_steps == 40 and config["interval"] == "step"


def test_yaml_durations_parse_as_intended() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import LRSchedulerCallable

    parser = ArgumentParser()
    parser.add_argument("--s", type=LRSchedulerCallable)
    init = (
        '{"class_path": "lightkit.lr_schedulers.MultiStep", '
        '"init_args": {"milestones": [0.25, "3ep", 45], "warmup": 2}}'
    )
    factory = parser.instantiate(parser.parse_args(["--s", init])).s
    sched = factory(_optimizer(), total_steps=T, steps_per_epoch=SPE)
    assert sched.milestones == [0.25, "3ep", 45] and sched.warmup == 2
    assert sched.schedule().keywords["milestones"] == (15.0, 30.0, 45.0)
    assert math.isclose(sched.get_last_lr()[0], 0.0)


CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "schedules").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_schedule_configs_parse_through_the_cli(path: Path) -> None:
    from lightkit.cli import main
    from lightkit.models.classifier import build_param_groups

    args = [
        "--model", "lightkit.models.ImageClassifier", "--model.init_args.encoder", "test_resnet",
        "--data", "lightkit.data.DigitsDataModule", "--config", str(path), "--trainer.logger", "false",
    ]
    cli = main(args, run=False)
    optimizer = cli.model.optimizer_factory(build_param_groups(cli.model.layer_groups()))
    # what ImageClassifier hands over from the trainer (see lr_scheduler_config)
    scheduler = cli.model.lr_scheduler_factory(
        optimizer, **({} if "plateau" in path.stem else {"total_steps": 200, "steps_per_epoch": 20})
    )
    assert scheduler.__module__.startswith("lightkit.lr_schedulers.")
    assert scheduler.interval == ("epoch" if isinstance(scheduler, L.ReduceOnPlateau) else "step")
    assert (
        len(
            {
                round(lr / g.get("initial_lr", g["lr"]), 12)
                for lr, g in zip(scheduler.get_last_lr(), optimizer.param_groups, strict=True)
            }
        )
        == 1
    )
