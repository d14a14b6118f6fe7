"""The stage loop: one Optuna study per stage, sampled or retrained, narrowed between stages, summarised."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightkit.search.config import Param, SearchConfig, SearchError, Stage, _dotted_args, _encode
from lightkit.search.optuna_glue import (
    CLAIM_ATTR,
    _claim,
    _fail_unclaimed_trials,
    _make_sampler,
    _ranked,
    _storage,
    _worker,
)
from lightkit.search.report import write_outputs
from lightkit.search.result import SearchResult, StageSummary
from lightkit.search.rules import BorderWarning, border_warnings, narrow
from lightkit.search.trial import _base_args, _parse_or_raise, _quiet_lightning, _trial_overrides, fit_trial

__all__ = ["export_best_config", "run_search"]

log = logging.getLogger("lightkit.search")



def _space_dict(space: dict[str, Param]) -> dict[str, dict[str, Any]]:
    return {
        k: {f: v for f, v in asdict(p).items() if v is not None and not (f == "log" and not v)}
        for k, p in space.items()
    }


def _params_of(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    return {k: space[k].decode(v) for k, v in trial.params.items() if k in space}


def _validate_keys(config: SearchConfig) -> Any:
    """Build one trial's CLI (parse + instantiate, no fit) and check every space key parses; return the
    parser."""
    from lightkit.cli import main

    probe = Path(config.run_dir) / "_validate"
    stage = config.stages[0]
    base = _base_args(config) + _dotted_args({**config.overrides, **stage.fit_overrides(),
                                              **_trial_overrides(config, probe, None, stage.name)})
    cli = _parse_or_raise(lambda: main(base, run=False), "the base config with overrides "
                          f"{sorted({**config.overrides, **stage.overrides})}")
    for key, param in config.space.items():
        sample = param.choices[0] if param.type == "categorical" else param.low  # type: ignore[index]
        if param.type == "int":
            sample = int(sample)  # type: ignore[arg-type]
        _parse_or_raise(lambda k=key, s=sample: cli.parser.parse_args(base + _dotted_args({k: s})),
                        f"space key {key!r}")
    shutil.rmtree(probe, ignore_errors=True)
    return cli.parser


def _suggest(trial: Any, key: str, param: Param) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(key, [_encode(c) for c in param.choices or []])
    if param.type == "int":
        return trial.suggest_int(key, int(param.low), int(param.high), log=param.log)  # type: ignore[arg-type]
    return trial.suggest_float(key, float(param.low), float(param.high), log=param.is_log)  # type: ignore[arg-type]


def _objective(
    config: SearchConfig, stage: Stage, space: dict[str, Param], stage_dir: Path
) -> Callable[[Any], float]:
    import optuna

    def objective(trial: Any) -> float:
        trial.set_user_attr(CLAIM_ATTR, _claim(trial.number))  # first: see _fail_unclaimed_trials
        params = {key: param.decode(_suggest(trial, key, param)) for key, param in space.items()}
        trial.set_user_attr("worker", _worker())
        trial_dir = stage_dir / f"trial_{trial.number:03d}"
        trial.set_user_attr("trial_dir", str(trial_dir))
        wandb_name = f"{config.study_name}-{stage.name}-{trial.number}" if config.wandb else None
        outcome = fit_trial(config, params, stage, trial_dir, trial=trial, wandb_name=wandb_name)
        record = {"number": trial.number, "stage": stage.name, "params": params, **asdict(outcome),
                  "metric": config.metric, "worker": _worker()}
        (trial_dir / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
        for key in ("status", "values", "epochs", "steps", "seconds", "reason"):
            trial.set_user_attr(key, record[key])
        if outcome.status != "complete":
            raise optuna.TrialPruned(outcome.reason)
        return float(outcome.value)  # type: ignore[arg-type]

    return objective


def _stage_space(
    config: SearchConfig, index: int, previous: list[Any], prev_space: dict[str, Param]
) -> dict[str, Param]:
    stage = config.stages[index]
    if not stage.narrow_top_k:
        return dict(config.space)
    top = previous[: stage.narrow_top_k]
    if not top:
        raise SearchError(f"search: stage {stage.name!r} narrows around the best trials of the previous "
                          "stage, "
                          "but it has no completed trial; give the previous stage more n_trials or a looser "
                          "pruner.")
    return {
        k: narrow(
            p, [t.params[k] for t in top if k in t.params], config.narrow_margin, within=config.space[k]
        )
        for k, p in prev_space.items()
    }



def _run_stage(config: SearchConfig, index: int, storage: Any, space: dict[str, Param], candidates: list[Any],
               progress: Any) -> Any:
    import optuna

    stage = config.stages[index]
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                          n_warmup_steps=config.pruner_warmup_steps)
              if stage.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(
        study_name=config.study(index),
        storage=storage,
        direction=config.direction,
        sampler=_make_sampler(config.sampler, config.seed),
        pruner=pruner,
        load_if_exists=True,
    )
    study.set_user_attr("space", _space_dict(space))
    study.set_user_attr("stage", asdict(stage))
    retrain = stage.retrain_top > 0
    if retrain:
        for rank, cand in enumerate(candidates[: stage.retrain_top]):
            study.enqueue_trial(dict(cand.params), user_attrs={"retrain_of": cand.number, "rank": rank},
                                skip_if_exists=True)
    budget = min(stage.retrain_top, len(candidates)) if retrain else stage.n_trials
    objective = _objective(config, stage, space, Path(config.run_dir) / stage.name)
    task = progress.add_task(f"{stage.name}", total=budget)
    states = optuna.trial.TrialState
    poll = max(0.5, min(5.0, config.heartbeat_interval / 2))
    while True:
        with (
            warnings.catch_warnings()
        ):  # "experimental since v2.9": stable in practice, and the resume relies on it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        _fail_unclaimed_trials(study, config)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
        running = sum(t.state == states.RUNNING for t in trials)
        waiting = sum(t.state == states.WAITING for t in trials)
        progress.update(task, completed=min(finished, budget))
        if waiting or (not retrain and finished + running < budget):
            study.optimize(objective, n_trials=1)
        elif running:  # other workers (or a killed one, until its heartbeat goes stale): wait at the barrier
            time.sleep(poll)
        else:
            break
    return study


def _summarise(config: SearchConfig, index: int, study: Any, space: dict[str, Param],
               seconds: float) -> tuple[StageSummary, list[BorderWarning]]:
    import optuna

    stage = config.stages[index]
    trials = study.get_trials(deepcopy=False)
    ranked = _ranked(trials, config.direction)
    best = ranked[0] if ranked else None
    best_params = _params_of(best, config.space) if best else {}
    # Retrain stages draw nothing new: their values are the previous stage's, already warned about.
    found = (
        border_warnings(space, dict(best.params), stage.name, config.border_fraction)
        if best and not stage.retrain_top
        else []
    )
    for w in found:
        log.warning(w.message())
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    return StageSummary(
        stage.name, study.study_name, _space_dict(space), len(ranked),
        sum(t.user_attrs.get("status") != "diverged" for t in pruned),
        sum(t.user_attrs.get("status") == "diverged" for t in pruned),
        best.value if best else None, best_params, [w.message() for w in found], seconds,
    ), found


def _trial_rows(config: SearchConfig, studies: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for index, study in enumerate(studies):
        for t in study.get_trials(deepcopy=False):
            status = t.user_attrs.get("status") or t.state.name.lower()
            rows.append({"stage": config.stages[index].name, "number": t.number, "state": t.state.name,
                         "status": status, "value": t.value, "params": _params_of(t, config.space),
                         "epochs": t.user_attrs.get("epochs"), "seconds": t.user_attrs.get("seconds"),
                         "worker": t.user_attrs.get("worker"), "trial_dir": t.user_attrs.get("trial_dir")})
    return rows


def export_best_config(
    config: SearchConfig, parser: Any, params: dict[str, Any], stage: Stage, path: Path
) -> Path:
    """Write the base config + the search's overrides + the stage's trainer budget + ``params`` as one
    resolved fit config (``python cli.py fit --config path``)."""
    args = _base_args(config) + _dotted_args({**config.overrides, **stage.fit_overrides(), **params})
    cfg = _parse_or_raise(lambda: parser.parse_args(args), "the best parameters")
    header = (f"# Best configuration of lightkit search {config.study_name!r} (stage {stage.name!r}, "
              f"{config.metric} {config.direction}).\n# python cli.py fit --config {path}\n")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(header + parser.dump(cfg, skip_none=False))
    os.replace(tmp, path)  # two workers finishing together write the same file
    return path


def run_search(config: SearchConfig, console: Any | None = None) -> SearchResult:
    """Run (or resume, or join as a worker) the staged search described by ``config``.

    Raises:
        SearchError: a config problem (unknown key, bad distribution, missing base config), or a
            stage with no completed trial to narrow around.
    """
    import optuna
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(width=140)
    t0 = time.perf_counter()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _quiet_lightning():
        parser = _validate_keys(config)
        storage = _storage(config)
        studies, summaries, all_warnings = [], [], []
        space, candidates = dict(config.space), []
        columns = (TextColumn("search "
                              "{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            for index, stage in enumerate(config.stages):
                ts = time.perf_counter()
                if not stage.retrain_top:
                    space = _stage_space(config, index, candidates, space)
                study = _run_stage(config, index, storage, space, candidates, progress)
                summary, found = _summarise(config, index, study, space, time.perf_counter() - ts)
                studies.append(study)
                summaries.append(summary)
                all_warnings += found
                candidates = _ranked(study.get_trials(deepcopy=False), config.direction)
    last = summaries[-1]
    best_stage = config.stages[-1]
    best_path = None
    if last.best_params:
        best_path = export_best_config(config, parser, last.best_params, best_stage, run_dir / "best.yaml")
    rows = _trial_rows(config, studies)
    result = SearchResult(last.best_value, last.best_params, best_stage.name, best_path, summaries, rows,
                          all_warnings, run_dir, config.storage_url(), time.perf_counter() - t0)
    write_outputs(config, result)
    return result

