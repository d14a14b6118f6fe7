"""``lightkit.search`` and ``python cli.py search``: the issue's four evidence points, outputs, errors.

Trials are tiny: a softmax-regression probe on raw 8x8 digits (``tests.helpers.search_probe``) for the
search mechanics, ``ImageClassifier(test_resnet)`` at 16 px for the exported-config round trip.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import wandb
import yaml

from lightkit.cli import main
from lightkit.commands.search import parser as search_parser
from lightkit.search import (
    Param,
    SearchConfig,
    SearchError,
    border_warnings,
    fit_trial,
    narrow,
    run_search,
)

ROOT = Path(__file__).resolve().parents[1]
LR = "model.init_args.optimizer.init_args.lr"
PROBE = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    },
    "model": {
        "class_path": "tests.helpers.search_probe.PixelProbe",
        "init_args": {
            "image_size": 8,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
        },
    },
    "data": {
        "class_path": "lightkit.data.DigitsDataModule",
        "init_args": {"batch_size": 32, "image_size": 8, "val_fraction": 0.3},
    },
}
COMPLETE, PRUNED, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                          optuna.trial.TrialState.FAIL)


def probe_config(
    tmp_path: Path, space: dict[str, Any], stages: list[dict[str, Any]], **kwargs: Any
) -> dict[str, Any]:
    return {"base": PROBE, "run_dir": str(tmp_path / "run"), "study_name": "t", "wandb": False,
            "heartbeat_interval": 1, "grace_period": 2, "space": space, "stages": stages, **kwargs}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def study_trials(cfg: dict[str, Any], stage: str) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{Path(cfg['run_dir']).resolve() / 'study.db'}"
    return optuna.load_study(study_name=f"{cfg['study_name']}/{stage}", storage=url).get_trials()


# -- pure rules ----------------------------------------------------------------------------------
def test_narrow_works_on_the_log_axis_and_stays_inside_the_space() -> None:
    lr = Param("loguniform", 1e-5, 1.0)
    out = narrow(lr, [1e-3, 1e-2], margin=0.5)
    assert out.low == pytest.approx(10**-3.5) and out.high == pytest.approx(10**-1.5)
    clipped = narrow(lr, [0.1, 1.0], margin=1.0)
    assert clipped.low == pytest.approx(0.01) and clipped.high == pytest.approx(1.0)
    same = narrow(Param("uniform", 0.0, 0.5), [0.2, 0.2])
    assert same.low == pytest.approx(0.175) and same.high == pytest.approx(0.225)
    width = narrow(Param("int", 8, 256, log=True), [32, 64])
    assert (width.low, width.high) == (22, 91) and isinstance(width.low, int)
    cat = Param("categorical", choices=[[], [64]])
    assert narrow(cat, [[]]) is cat


def test_border_warning_rule_and_suggested_range() -> None:
    space = {LR: Param("loguniform", 1e-6, 1e-4), "model.init_args.dropout": Param("uniform", 0.0, 0.5),
             "data.init_args.batch_size": Param("int", 16, 128)}
    found = border_warnings(
        space, {LR: 9e-5, "model.init_args.dropout": 0.25, "data.init_args.batch_size": 20}
    )
    by_key = {w.key: w for w in found}
    assert set(by_key) == {LR, "data.init_args.batch_size"}
    assert by_key[LR].edge == "upper" and by_key[LR].suggested_low == pytest.approx(1e-6)
    assert by_key[LR].suggested_high == pytest.approx(1e-3)  # one decade: half the 2-decade log width
    assert "widen it to low: 1e-06, high: 0.001" in by_key[LR].message()
    assert (
        by_key["data.init_args.batch_size"].suggested_low,
        by_key["data.init_args.batch_size"].suggested_high,
    ) == (0, 128)
    # dropout best at 0 of [0, 0.5]: the edge cannot move below 0, no warning; in the middle: none either
    assert border_warnings(space, {"model.init_args.dropout": 0.0}) == []
    assert border_warnings(space, {LR: 1e-5}) == []


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space", "match"),
    [
        (
            {LR: {"type": "gaussian", "low": 1e-4, "high": 1.0}},
            r"space\.model\.init_args\.optimizer\.init_args\.lr\.type='gaussian' is not a distribution",
        ),
        ({LR: {"type": "loguniform", "low": 0.1, "high": 0.1}}, r"low=0\.1 >= high=0\.1; give low < high"),
        ({LR: {"type": "loguniform", "low": 0.0, "high": 0.1}}, r"log-scaled but low=0\.0 <= 0"),
        ({LR: {"type": "uniform", "low": 0.1}}, r"needs low and high"),
        ({"model.init_args.hidden": {"type": "categorical"}}, r"categorical but has no choices"),
        ({}, r"space is empty"),
    ],
)
def test_bad_space_raises(tmp_path: Path, space: dict[str, Any], match: str) -> None:
    with pytest.raises(SearchError, match=match):
        SearchConfig(**probe_config(tmp_path, space, [{"name": "a", "n_trials": 2}]))


def test_bad_base_and_stages_raise(tmp_path: Path) -> None:
    space = {LR: {"type": "loguniform", "low": 1e-3, "high": 1.0}}
    cfg = probe_config(tmp_path, space, [{"name": "a", "n_trials": 2}])
    with pytest.raises(SearchError, match=r"base_config '/nonexistent/fit\.yaml' does not exist"):
        SearchConfig(**{**cfg, "base": None, "base_config": "/nonexistent/fit.yaml"})
    with pytest.raises(SearchError, match=r"exactly one of base_config .* got both"):
        SearchConfig(**{**cfg, "base_config": str(ROOT / "configs/quickstart.yaml")})
    with pytest.raises(SearchError, match=r"first stage 'a' has nothing to narrow or retrain"):
        SearchConfig(**{**cfg, "stages": [{"name": "a", "retrain_top": 2}]})
    with pytest.raises(SearchError, match=r"stage 'b' needs exactly one of n_trials > 0"):
        SearchConfig(**{**cfg, "stages": [{"name": "a", "n_trials": 2}, {"name": "b"}]})


def test_unknown_key_stops_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = probe_config(
        tmp_path,
        {"model.init_args.no_such_arg": {"type": "uniform", "low": 0.0, "high": 1.0}},
        [{"name": "a", "n_trials": 2}],
    )
    with pytest.raises(SearchError, match=r"rejects space key 'model\.init_args\.no_such_arg'"):
        run_search(SearchConfig(**cfg))
    assert not (tmp_path / "run" / "a").exists()
    # the command: one line on stderr, exit code 2
    with pytest.raises(SystemExit) as exc:
        main(["search", "--config", str(write(tmp_path / "s.yaml", cfg))])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightkit search: the fit config rejects space key "
                              "'model.init_args.no_such_arg'")
    with pytest.raises(SystemExit) as exc:
        main(["search", "--config", str(write(tmp_path / "s2.yaml", {**cfg, "spaces": {}}))])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("lightkit search: unknown key(s) ['spaces'] in ")


def test_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    p = search_parser()
    options = p.parse_args(["--config", "configs/search.yaml"]).as_dict()
    config = SearchConfig(**{k: v for k, v in options.items() if k != "config"})
    assert config.sampler == "random" and config.base_paths() == ["configs/quickstart.yaml"]
    assert config.space["model.init_args.lr_scheduler.init_args.max_lr"].is_log
    assert (
        config.stages[0].max_epochs == 1 and config.stages[0].limit_train_batches <= 1.0
    )  # coarse: <= 1 epoch
    assert [s.name for s in config.stages] == ["coarse", "fine", "final"] and config.stages[
        2
    ].retrain_top == 2


# -- evidence: a misplaced range warns -----------------------------------------------------------
def test_misplaced_lr_range_triggers_the_border_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's best Adam LR is ~0.03-0.1 (see the grid test); a range of [1e-6, 1e-4] is far too low."""
    cfg = probe_config(tmp_path, {LR: {"type": "loguniform", "low": 1e-6, "high": 1e-4}},
                       [{"name": "coarse", "n_trials": 5, "max_epochs": 1, "limit_train_batches": 8}])
    with caplog.at_level("WARNING", logger="lightkit.search"):
        result = run_search(SearchConfig(**cfg))
    assert len(result.warnings) == 1
    w = result.warnings[0]
    assert (w.key, w.edge, w.stage) == (LR, "upper", "coarse") and w.suggested_high == pytest.approx(1e-3)
    assert any("lies at the upper edge of [1e-06, "
               "0.0001]" in r.getMessage() and "high: 0.001" in r.getMessage()
               for r in caplog.records)
    values = [r["params"][LR] for r in result.trials]
    assert result.best_params[LR] == max(values)  # higher is better throughout this range
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stages"][0]["warnings"]


# -- outputs, divergence, export -----------------------------------------------------------------
def test_search_outputs_and_exported_best_config_fits(tmp_path: Path) -> None:
    base = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "logger": False,
            "num_sanity_val_steps": 0,
            "limit_val_batches": 2,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/acc", "mode": "max"},
                }
            ],
        },
        "model": {
            "class_path": "lightkit.models.ImageClassifier",
            "init_args": {
                "encoder": "test_resnet",
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}},
            },
        },
        "data": {
            "class_path": "lightkit.data.DigitsDataModule",
            "init_args": {"batch_size": 16, "image_size": 16},
        },
    }
    cfg = {"base": base, "run_dir": str(tmp_path / "run"), "study_name": "tiny", "wandb": True,
           "space": {LR: {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                     "model.init_args.hidden": {"type": "categorical", "choices": [[], [16]]}},
           "stages": [{"name": "coarse", "n_trials": 2, "limit_train_batches": 3},
                      {"name": "final", "retrain_top": 1, "max_epochs": 2, "limit_train_batches": 3}]}
    # a W&B run left open by an earlier fit in this process must not swallow the first trial
    wandb.init(project="lightkit", name="leaked", dir=str(tmp_path / "leaked"), mode="offline")
    result = run_search(SearchConfig(**cfg))
    assert wandb.run is None and list((tmp_path / "leaked").glob("wandb/offline-run-*/run-*.wandb"))
    run = tmp_path / "run"
    assert [s.n_complete for s in result.stages] == [2, 1] and result.best_stage == "final"
    for row in result.trials:
        trial_dir = Path(row["trial_dir"])
        saved = yaml.safe_load((trial_dir / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(row["params"][LR])
        assert saved["model"]["init_args"]["hidden"] == row["params"]["model.init_args.hidden"]
        assert saved["trainer"]["enable_progress_bar"] is False
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] == "complete" and metrics["value"] == pytest.approx(row["value"])
        assert metrics["values"] and metrics["steps"] == 3 * metrics["epochs"]
    # sampling-stage checkpoints are dropped, the retrained one is kept
    assert not list((run / "coarse").rglob("*.ckpt")) and list((run / "final").rglob("*.ckpt"))
    retrained = result.trials[-1]
    coarse_best = max((r for r in result.trials if r["stage"] == "coarse"), key=lambda r: r["value"])
    assert retrained["params"] == coarse_best["params"] and retrained["epochs"] == 2
    for name in ("trials.csv", "summary.json", "metric_vs_params.png", "stage_narrowing.png", "best.yaml"):
        assert (run / name).stat().st_size > 0, name
    # W&B: one offline run per trial and a summary run, all in the study's group
    runs = [f.read_bytes() for f in sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))]
    names = {"tiny-coarse-0", "tiny-coarse-1", "tiny-final-0", "tiny-summary"}
    assert len(runs) == 4 and {n for n in names for r in runs if n.encode() in r} == names
    assert all(r.count(b"tiny") >= 2 for r in runs)  # the run name and the group "tiny"
    # the exported config: best parameters, the final stage's budget, and it fits
    best = yaml.safe_load(result.best_config.read_text())
    assert best["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(result.best_params[LR])
    assert best["trainer"]["max_epochs"] == 2 and best["trainer"]["logger"] is False
    cli = main(
        [
            "fit",
            "--config",
            str(result.best_config),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            f"--trainer.default_root_dir={tmp_path / 'refit'}",
            "--test_after_fit=false",
        ]
    )
    assert cli.trainer.global_step == 2 and math.isfinite(float(cli.trainer.callback_metrics["val/acc"]))


def test_diverging_trials_stop_at_once(tmp_path: Path) -> None:
    cfg = probe_config(
        tmp_path,
        {LR: {"type": "loguniform", "low": 1e37, "high": 1e38}},
        [{"name": "coarse", "n_trials": 2, "max_epochs": 3}],
        base={
            **PROBE,
            "model": {
                **PROBE["model"],
                "init_args": {
                    "image_size": 8,
                    "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0}},
                },
            },
        },
    )
    result = run_search(SearchConfig(**cfg))
    assert [r["status"] for r in result.trials] == ["diverged", "diverged"]
    assert result.stages[0].n_diverged == 2 and result.best_params == {} and result.best_config is None
    for row in result.trials:
        metrics = json.loads((Path(row["trial_dir"]) / "metrics.json").read_text())
        assert metrics["steps"] < 29 and metrics["epochs"] == 0  # stopped within the first epoch of 29 steps
        assert "train loss nan" in metrics["reason"] or "train loss inf" in metrics["reason"]
    assert [t.state for t in study_trials(cfg, "1-coarse")] == [PRUNED, PRUNED]


# -- evidence: the search lands where a grid says accuracy is within 1 point of the best ---------
@pytest.mark.slow
def test_search_finds_an_lr_in_the_grid_band(tmp_path: Path) -> None:
    """Softmax regression on 8x8 digits (cheap enough for an 11-point grid): the search's best LR lies in
    the range where the grid says validation accuracy is within 1 point of the best, at the grid's
    resolution, and its own accuracy is within 1 point."""
    space = {LR: {"type": "loguniform", "low": 1e-4, "high": 10.0}}
    stages = [{"name": "coarse", "n_trials": 8, "max_epochs": 1},
              {"name": "fine", "n_trials": 5, "max_epochs": 2, "narrow_top_k": 3}]
    config = SearchConfig(**probe_config(tmp_path, space, stages, pruner_startup_trials=100))
    result = run_search(config)
    grid = [10 ** (e / 4) for e in range(-10, 1)]  # 3.2e-3 ... 1, quarter decades
    fine = config.stages[1]
    acc = {lr: fit_trial(config, {LR: lr}, fine, tmp_path / "grid" / f"{lr:.3g}").value for lr in grid}
    best = max(acc.values())
    band = [lr for lr, a in acc.items() if a >= best - 0.01]
    found = result.best_params[LR]
    (tmp_path / "grid.json").write_text(json.dumps({"acc": acc, "band": band, "found": found}))
    # The grid resolves the band to a quarter decade: the 1-point band starts after the last grid LR
    # below it that is out of it, and ends before the first one above it. (Measured 2026-11-28: grid
    # band 0.032..0.1 at grid points, bounded by 0.018 and 0.18; the search found 0.135 at 93.9 % vs
    # the grid's best 94.3 %.)
    below = [lr for lr in grid if lr < min(band)]
    above = [lr for lr in grid if lr > max(band)]
    assert (max(below) if below else 0.0) < found < (min(above) if above else math.inf), (found, band, acc)
    assert result.best_value >= best - 0.01  # and its own accuracy is within 1 point of the grid's best


# -- evidence: kill + resume loses no trial ------------------------------------------------------
def _command(config_path: Path) -> list[str]:
    return [sys.executable, "-c", "import torch; torch.set_num_threads(1); from lightkit.cli import main; "
            f"main(['search', '--config', {str(config_path)!r}])"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


@pytest.mark.slow
def test_kill_and_resume_loses_no_trial(tmp_path: Path) -> None:
    cfg = probe_config(tmp_path, {LR: {"type": "loguniform", "low": 1e-3, "high": 1.0}},
                       [{"name": "coarse", "n_trials": 5, "max_epochs": 1, "limit_train_batches": 10}])
    path = write(tmp_path / "search.yaml", cfg)
    proc = subprocess.Popen(
        _command(path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    done: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            done = [t for t in study_trials(cfg, "1-coarse") if t.state == COMPLETE]
        except Exception:  # noqa: BLE001 - the database or the study does not exist yet
            continue
        if len(done) >= 2:
            break
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = {t.number: (t.params, t.value) for t in study_trials(cfg, "1-coarse") if t.state == COMPLETE}
    assert len(before) >= 2
    resumed = subprocess.run(
        _command(path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = study_trials(cfg, "1-coarse")
    complete = {t.number: (t.params, t.value) for t in trials if t.state == COMPLETE}
    assert len(complete) == 5  # the budget, not more, not less
    assert all(complete[n] == before[n] for n in before)  # no finished trial lost or re-run
    # The one killed mid-run: failed, and retried (Optuna's retry records it in retry_history) with its
    # params; a kill before the sampler ran leaves no params, and its retry samples them afresh.
    for failed in (t for t in trials if t.state == FAIL):
        retries = [t for t in trials
                   if t.state == COMPLETE and failed.number in t.system_attrs.get("retry_history", [])]
        assert retries, f"failed trial {failed.number} (params {failed.params}) was not retried"
        if failed.params:
            assert retries[0].params == failed.params, (failed.params, retries[0].params)
    assert {t.state for t in trials} <= {COMPLETE, FAIL}


@pytest.mark.slow
@pytest.mark.parametrize("claimed", [False, True], ids=["unclaimed", "claimed"])
def test_trial_of_a_worker_killed_before_its_first_heartbeat_is_retried(tmp_path: Path, claimed: bool) -> None:
    """Optuna never fails a RUNNING trial without a heartbeat (a worker killed right after creating
    it, or right after the objective claimed it and before Optuna's heartbeat thread wrote): the
    search must not wait for it at the stage barrier for ever."""
    from lightkit.search.optuna_glue import CLAIM_ATTR, _claim

    cfg = probe_config(tmp_path, {LR: {"type": "loguniform", "low": 1e-3, "high": 1.0}},
                       [{"name": "coarse", "n_trials": 3, "max_epochs": 1, "limit_train_batches": 5}])
    path = write(tmp_path / "search.yaml", cfg)
    Path(cfg["run_dir"]).mkdir(parents=True)
    url = f"sqlite:///{Path(cfg['run_dir']).resolve() / 'study.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    orphan = optuna.create_study(study_name="t/1-coarse", storage=storage, direction="maximize").ask()
    if claimed:  # by this (live) process: the claim alone must not keep a trial with no heartbeat alive
        orphan.set_user_attr(CLAIM_ATTR, _claim(orphan.number))
    time.sleep(3)  # older than the grace period, and no heartbeat was ever written
    try:
        done = subprocess.run(
            _command(path), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else str(exc.stderr)
        raise AssertionError(f"the search waited for the orphaned trial: {err[-1500:]}") from None
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"trial {orphan.number} of t/1-coarse was started" in done.stderr
    trials = study_trials(cfg, "1-coarse")
    assert trials[orphan.number].state == FAIL
    assert sum(t.state == COMPLETE for t in trials) == 3 and {t.state for t in trials} == {COMPLETE, FAIL}
    assert any(t.system_attrs.get("failed_trial") == orphan.number for t in trials)  # queued again


# -- evidence: two workers on one SQLite study ---------------------------------------------------
@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path: Path) -> None:
    cfg = probe_config(
        tmp_path,
        {
            LR: {"type": "loguniform", "low": 1e-3, "high": 1.0},
            "model.init_args.optimizer.init_args.weight_decay": {"type": "uniform", "low": 0.0, "high": 0.01},
        },
        # 30 batches a trial: 8 trials outlast a worker's start-up, so both workers take trials (with 10, on an
        # idle box, one worker once finished all 8 before the other had imported lightkit)
        [{"name": "coarse", "n_trials": 8, "max_epochs": 1, "limit_train_batches": 30}],
        pruner_startup_trials=100,
    )  # no pruning: every trial must complete
    path = write(tmp_path / "search.yaml", cfg)
    procs = [
        subprocess.Popen(
            _command(path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    trials = study_trials(cfg, "1-coarse")
    numbers = [t.number for t in trials]
    assert (
        sorted(numbers) == list(range(len(trials))) and 8 <= len(trials) <= 9
    )  # one extra at most (race at the end)
    assert all(t.state == COMPLETE for t in trials)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers did trials
    assert len({t.user_attrs["trial_dir"] for t in trials}) == len(trials)


def test_trial_monitor_prunes_below_the_median_and_stops_on_nan() -> None:
    import torch

    from lightkit.search.trial import TrialMonitor, _Diverged

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    for value in (0.8, 0.9, 0.85):
        trial = study.ask()
        trial.report(value, step=0)
        study.tell(trial, value)
    trainer = SimpleNamespace(
        sanity_checking=False, callback_metrics={"val/acc": torch.tensor(0.2)}, global_step=7
    )
    monitor = TrialMonitor("val/acc", study.ask())
    with pytest.raises(optuna.TrialPruned, match=r"val/acc=0\.2 below the median at validation 1"):
        monitor.on_validation_end(trainer, None)
    good = TrialMonitor("val/acc", study.ask())
    good.on_validation_end(
        SimpleNamespace(**{**vars(trainer), "callback_metrics": {"val/acc": torch.tensor(0.95)}}), None
    )
    assert good.values == [pytest.approx(0.95)]
    with pytest.raises(_Diverged, match=r"train loss nan at step 7"):
        good.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("nan"))}, None, 0)
    with pytest.raises(_Diverged, match=r"val/acc=inf"):
        TrialMonitor("val/acc").on_validation_end(
            SimpleNamespace(**{**vars(trainer), "callback_metrics": {"val/acc": torch.tensor(float("inf"))}}),
            None,
        )
    with pytest.raises(SearchError, match=r"metric 'val/f1' was not logged at validation \(logged: "
                                          r"\['val/acc'\]\)"):
        TrialMonitor("val/f1").on_validation_end(trainer, None)


# The package's layering, in the order its docstring lists: each module may import only earlier ones.
SEARCH_LAYERS = ["config", "rules", "result", "trial", "optuna_glue", "report", "stages"]


def _search_imports(name: str) -> set[str]:
    """Sibling modules of lightkit.search imported anywhere in ``name`` (function-level imports included)."""
    import ast

    import lightkit.search

    path = Path(lightkit.search.__file__).with_name(f"{name}.py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightkit.search."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("lightkit.search.")}
    return found


def test_search_package_has_no_import_cycle_and_pure_rules() -> None:
    import lightkit.search

    modules = sorted(
        p.stem for p in Path(lightkit.search.__file__).parent.glob("*.py") if p.stem != "__init__"
    )
    assert modules == sorted(SEARCH_LAYERS), (
        "a new lightkit.search module: give it its place in SEARCH_LAYERS"
    )
    for i, name in enumerate(SEARCH_LAYERS):
        later = _search_imports(name) - set(SEARCH_LAYERS[:i])
        assert not later, (
            f"lightkit.search.{name} imports {sorted(later)}, which come after it (an import cycle)"
        )
    # The rules are testable without Optuna or Lightning.
    rules = Path(lightkit.search.__file__).with_name("rules.py").read_text()
    assert "optuna" not in rules and "lightning" not in rules
    code = ("import sys; import lightkit.search.rules; "
            "assert not {'optuna', 'lightning'} & set(sys.modules), sorted(m for m in sys.modules if "
            "'optuna' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_fail_unclaimed_trials_fails_the_unclaimed_and_the_claimed_without_heartbeat(tmp_path: Path) -> None:
    from lightkit.search.optuna_glue import CLAIM_ATTR, _claim, _fail_unclaimed_trials

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    unclaimed, silent, alive = study.ask(), study.ask(), study.ask()
    for trial in (silent, alive):
        trial.set_user_attr(CLAIM_ATTR, _claim(trial.number))
    storage.record_heartbeat(alive._trial_id)
    time.sleep(2.2)  # all three are older than the grace period
    young = study.ask()  # unclaimed, but started within the grace period: a worker may still claim it
    _fail_unclaimed_trials(study, SimpleNamespace(grace_period=2, max_retry=3))
    states = {t.number: t.state for t in study.get_trials()}
    assert states[unclaimed.number] == FAIL and states[silent.number] == FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING  # its heartbeat is the stale check's
    assert states[young.number] == optuna.trial.TrialState.RUNNING
    retried = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retried) == [unclaimed.number, silent.number]


def test_without_heartbeat_answers_none_on_a_storage_without_heartbeats(tmp_path: Path) -> None:
    from lightkit.search.optuna_glue import _without_heartbeat

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")  # no heartbeat_interval
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    assert _without_heartbeat(study, [trial._trial_id]) == set()  # not "every trial": nothing to read
    beating = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="s", storage=beating)
    assert _without_heartbeat(study, [trial._trial_id]) == {trial._trial_id}
    beating.record_heartbeat(trial._trial_id)
    assert _without_heartbeat(study, [trial._trial_id]) == set()
