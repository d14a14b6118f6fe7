"""Hyperparameter search over any key of a lightkit fit config, on Optuna.

    python cli.py search --config configs/search.yaml

Guidance it turns into defaults (CS231n "hyperparameter optimization"; Bergstra & Bengio 2012,
"Random Search for Hyper-Parameter Optimization", https://jmlr.org/papers/v13/bergstra12a.html):
random search rather than a grid, learning rate and weight decay on a log scale, coarse to fine
(many short trials of at most one epoch, then ranges narrowed around the best, then the best few
trained longer), the validation split as the judge, and a warning when the best value sits on the
edge of its range (the optimum may lie outside).

Each trial is an ordinary lightkit fit: :func:`lightkit.cli.main` parses the base config plus dotted
overrides (``--model.init_args.optimizer.init_args.lr=0.003``), so every key the fit config accepts is
searchable, and the trial's full config is dumped next to its metrics. A trial whose training loss or
monitored metric turns NaN/Inf stops at once (state PRUNED, ``status=diverged``); Optuna's median
pruner stops hopeless ones at each validation.

Storage: one Optuna study per stage (``<study_name>/<i>-<stage>``) in SQLite under the run folder, or
any SQLAlchemy URL. Finished trials are committed as they end; a killed worker's running trial is
failed by Optuna's heartbeat after ``grace_period`` seconds and re-queued with the same parameters, so
a search resumes by running the same command again. Several workers on one storage share the work:
each draws its parameters from a sampler seeded by ``(seed, trial number)``, so no two trials repeat
and a single worker is reproducible; stages are barriers (all workers wait for a stage to finish).

Files in ``run_dir``: ``study.db``, ``<stage>/trial_<n>/{config.yaml,metrics.json}``, ``trials.csv``,
``summary.json``, ``best.yaml`` (ready for ``python cli.py fit --config``), ``metric_vs_params.png``,
``stage_narrowing.png``; W&B runs (offline by default) grouped by study name.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = [
    "BorderWarning",
    "Param",
    "SearchConfig",
    "SearchError",
    "SearchResult",
    "Stage",
    "StageSummary",
    "TrialMonitor",
    "TrialOutcome",
    "border_warnings",
    "export_best_config",
    "fit_trial",
    "narrow",
    "run_search",
]

log = logging.getLogger("lightkit.search")

ParamType = Literal["loguniform", "uniform", "int", "categorical"]
_PARAM_TYPES = ("loguniform", "uniform", "int", "categorical")
_PRIMITIVE = (type(None), bool, int, float, str)


class SearchError(ValueError):
    """A search config or run problem; the message names the bad value and the fix."""


# -- configuration -------------------------------------------------------------------------------
@dataclass
class Param:
    """One dimension of the search space.

    Args:
        type: ``loguniform`` (learning rate, weight decay: sampled uniformly in log space),
            ``uniform`` (dropout), ``int`` (widths, batch size) or ``categorical``.
        low: lower bound (numeric types), > 0 for ``loguniform`` and log ``int``.
        high: upper bound (numeric types), > low.
        choices: the values of a ``categorical`` (any YAML value: numbers, strings, lists).
        log: ``int`` only: sample on a log scale.
    """

    type: ParamType
    low: float | None = None
    high: float | None = None
    choices: list[Any] | None = None
    log: bool = False

    @property
    def numeric(self) -> bool:
        return self.type != "categorical"

    @property
    def is_log(self) -> bool:
        return self.type == "loguniform" or (self.type == "int" and self.log)

    def check(self, key: str) -> None:
        """Raise :class:`SearchError` naming ``key`` when the definition is invalid."""
        if self.type not in _PARAM_TYPES:
            raise SearchError(f"search: space.{key}.type={self.type!r} is not a distribution; use one of {list(_PARAM_TYPES)}.")
        if self.type == "categorical":
            if not self.choices:
                raise SearchError(f"search: space.{key} is categorical but has no choices; give choices: [a, b, ...].")
            return
        if self.low is None or self.high is None:
            raise SearchError(f"search: space.{key} ({self.type}) needs low and high, e.g. {{type: {self.type}, low: ..., high: ...}}.")
        if not self.low < self.high:
            raise SearchError(f"search: space.{key} has low={self.low} >= high={self.high}; give low < high.")
        if self.is_log and self.low <= 0:
            raise SearchError(f"search: space.{key} is log-scaled but low={self.low} <= 0; give low > 0 (e.g. 1e-5).")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise SearchError(f"search: space.{key} is int but low={self.low}, high={self.high} are not whole numbers.")

    def to_scale(self, value: float) -> float:
        """The value on the axis the parameter is sampled on (log10 for log parameters)."""
        return math.log10(value) if self.is_log else float(value)

    def from_scale(self, value: float) -> float:
        return 10.0**value if self.is_log else value

    def decode(self, value: Any) -> Any:
        """The YAML value of an Optuna parameter value (categorical lists / dicts are stored as YAML text)."""
        if self.type == "categorical":
            for choice in self.choices or []:
                if _encode(choice) == value:
                    return choice
        return value


@dataclass
class Stage:
    """One stage of a coarse-to-fine search.

    Args:
        name: stage name (study suffix, folder name).
        n_trials: trials sampled in this stage, over all workers.
        max_epochs: ``trainer.max_epochs`` of each trial.
        limit_train_batches: ``trainer.limit_train_batches`` (a fraction <= 1.0 of the train batches,
            or a batch count): a coarse stage of less than one epoch.
        narrow_top_k: 0 samples the whole space; k > 0 narrows each numeric range around the k best
            trials of the previous stage (on the log axis for log parameters).
        retrain_top: instead of sampling, retrain the best n configurations of the previous stage.
        prune: stop trials below the median of earlier trials at the same validation (Optuna
            ``MedianPruner``); off in retrain stages.
        overrides: extra dotted fit-config overrides for this stage (``trainer.val_check_interval: 0.5``).
    """

    name: str
    n_trials: int = 0
    max_epochs: int = 1
    limit_train_batches: float | int = 1.0
    narrow_top_k: int = 0
    retrain_top: int = 0
    prune: bool = True
    overrides: dict = field(default_factory=dict)

    def fit_overrides(self) -> dict[str, Any]:
        return {"trainer.max_epochs": self.max_epochs, "trainer.limit_train_batches": self.limit_train_batches,
                **self.overrides}


def _default_stages() -> list[Stage]:
    return [Stage("coarse", n_trials=20, max_epochs=1), Stage("fine", n_trials=10, max_epochs=3, narrow_top_k=5),
            Stage("final", retrain_top=3, max_epochs=10, prune=False)]


@dataclass
class SearchConfig:
    """What ``python cli.py search --config X.yaml`` reads (every field is a top-level YAML key).

    Args:
        space: dotted fit-config key -> :class:`Param`, e.g.
            ``model.init_args.optimizer.init_args.lr: {type: loguniform, low: 1e-5, high: 1e-1}``.
        base_config: the fit config(s) every trial starts from (paths relative to the working directory).
        base: the fit config embedded here instead of ``base_config``.
        overrides: dotted overrides applied to every trial and to ``best.yaml``.
        stages: the coarse-to-fine stages, run in order.
        metric: the logged validation metric to optimise.
        direction: ``maximize`` (accuracy) or ``minimize`` (loss).
        sampler: ``random`` (default: Bergstra & Bengio 2012) or ``tpe`` (Optuna's TPE).
        seed: sampler seed; the trial with number n draws from seed (seed, n).
        run_dir: folder of the study database, trial folders, plots and ``best.yaml``.
        study_name: Optuna study name prefix (one study per stage) and W&B group.
        storage: SQLAlchemy URL; default ``sqlite:///<run_dir>/study.db``. Use PostgreSQL / MySQL for
            workers on several machines.
        pruner_startup_trials: trials per stage before the median pruner acts.
        pruner_warmup_steps: validations per trial before the median pruner acts.
        narrow_margin: narrowed range = top-k span widened by this fraction of it on each side.
        border_fraction: the outer fraction of a range (on the sampling axis) that counts as its edge.
        heartbeat_interval: seconds between a running trial's heartbeats in the storage.
        grace_period: seconds without heartbeat after which a trial counts as dead, is failed and re-queued.
        max_retry: re-queues of a dead trial.
        wandb: log each trial and a study summary to W&B (offline unless ``WANDB_MODE=online``).
        wandb_project: W&B project.
        keep_checkpoints: keep the checkpoints of sampling stages (retrain stages always keep theirs).
    """

    space: dict[str, Param]
    base_config: str | list[str] | None = None
    # Plain ``dict``: jsonargparse leaves it as written (with ``dict[str, Any]`` it resolves class_paths).
    base: dict | None = None
    overrides: dict = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=_default_stages)
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["random", "tpe"] = "random"
    seed: int = 0
    run_dir: str = "runs/search"
    study_name: str = "search"
    storage: str | None = None
    pruner_startup_trials: int = 5
    pruner_warmup_steps: int = 0
    narrow_margin: float = 0.5
    border_fraction: float = 0.15
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 2
    wandb: bool = True
    wandb_project: str = "lightkit"
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        self.space = {k: v if isinstance(v, Param) else Param(**v) for k, v in self.space.items()}
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        if not self.space:
            raise SearchError("search: space is empty; name at least one fit-config key, e.g. "
                              "model.init_args.optimizer.init_args.lr: {type: loguniform, low: 1e-5, high: 1e-1}.")
        for key, param in self.space.items():
            param.check(key)
        if (self.base_config is None) == (self.base is None):
            raise SearchError("search: give exactly one of base_config (a fit config path) and base (the fit config "
                              "embedded); got " + ("both." if self.base is not None else "neither."))
        for path in self.base_paths():
            if not Path(path).is_file():
                raise SearchError(f"search: base_config {path!r} does not exist; give the path of a fit config "
                                  f"(e.g. configs/quickstart.yaml) or embed the config under base:.")
        if not self.stages:
            raise SearchError("search: stages is empty; give at least one stage with n_trials > 0.")
        for i, stage in enumerate(self.stages):
            if (stage.n_trials > 0) == (stage.retrain_top > 0):
                raise SearchError(f"search: stage {stage.name!r} needs exactly one of n_trials > 0 (sample) and "
                                  f"retrain_top > 0 (retrain the best); got n_trials={stage.n_trials}, "
                                  f"retrain_top={stage.retrain_top}.")
            if i == 0 and (stage.retrain_top or stage.narrow_top_k):
                raise SearchError(f"search: the first stage {stage.name!r} has nothing to narrow or retrain; give it "
                                  f"n_trials and narrow_top_k: 0.")
            if stage.max_epochs < 1:
                raise SearchError(f"search: stage {stage.name!r} max_epochs={stage.max_epochs} must be >= 1.")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise SearchError(f"search: stage names {names} repeat; give each stage its own name.")
        if not 0 < self.border_fraction < 0.5:
            raise SearchError(f"search: border_fraction={self.border_fraction} must be in (0, 0.5); 0.15 is the default.")

    def base_paths(self) -> list[str]:
        if self.base_config is None:
            return []
        return [self.base_config] if isinstance(self.base_config, str) else list(self.base_config)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    def study(self, index: int) -> str:
        return f"{self.study_name}/{index + 1}-{self.stages[index].name}"


def _encode(choice: Any) -> Any:
    return choice if isinstance(choice, _PRIMITIVE) else yaml.safe_dump(choice, default_flow_style=True).strip()


def _cli_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _dotted_args(overrides: dict[str, Any]) -> list[str]:
    return [f"--{key}={_cli_value(value)}" for key, value in overrides.items()]


# -- pure rules: narrowing and border warnings ---------------------------------------------------
def narrow(param: Param, values: Sequence[float], margin: float = 0.5, within: Param | None = None) -> Param:
    """The range of ``param`` around the ``values`` of the best trials.

    The span of the values on the sampling axis (log10 for log parameters) is widened by ``margin``
    times itself on each side (a tenth of the range when all values coincide) and clipped to
    ``within`` (default ``param``). Categorical parameters are returned unchanged.
    """
    if not param.numeric or not values:
        return param
    outer = within or param
    lo_s, hi_s = outer.to_scale(outer.low), outer.to_scale(outer.high)  # type: ignore[arg-type]
    scaled = [param.to_scale(v) for v in values]
    vmin, vmax = min(scaled), max(scaled)
    pad = margin * (vmax - vmin) if vmax > vmin else 0.05 * (hi_s - lo_s)
    low = param.from_scale(max(lo_s, vmin - pad))
    high = param.from_scale(min(hi_s, vmax + pad))
    if param.type == "int":
        low, high = math.floor(low), math.ceil(high)
        if low == high:
            low, high = max(int(outer.low), low - 1), min(int(outer.high), high + 1)  # type: ignore[arg-type]
    return replace(param, low=low, high=high)


@dataclass
class BorderWarning:
    """The best value of a numeric parameter lies on the edge of its range."""

    stage: str
    key: str
    edge: Literal["lower", "upper"]
    best: float
    low: float
    high: float
    suggested_low: float
    suggested_high: float
    log: bool

    def message(self) -> str:
        kind = "loguniform" if self.log else "range"
        return (f"search: stage {self.stage!r}: best {self.key}={self.best:.4g} lies at the {self.edge} edge of "
                f"[{self.low:.4g}, {self.high:.4g}] ({kind}); the optimum may lie outside: widen it to "
                f"low: {self.suggested_low:.4g}, high: {self.suggested_high:.4g}.")


def border_warnings(space: dict[str, Param], best: dict[str, Any], stage: str = "",
                    fraction: float = 0.15) -> list[BorderWarning]:
    """A :class:`BorderWarning` for each numeric parameter whose best value lies in the outer
    ``fraction`` of its range (on the sampling axis). The suggested range moves that edge outward by
    half the range's width (a factor for log parameters); a range starting at >= 0 is not widened below 0,
    and no warning is given when the edge cannot move."""
    out = []
    for key, param in space.items():
        if not param.numeric or key not in best:
            continue
        lo, hi = param.to_scale(param.low), param.to_scale(param.high)  # type: ignore[arg-type]
        pos = (param.to_scale(best[key]) - lo) / (hi - lo)
        if fraction <= pos <= 1 - fraction:
            continue
        edge: Literal["lower", "upper"] = "lower" if pos < fraction else "upper"
        width = hi - lo
        new_lo, new_hi = (lo - width / 2, hi) if edge == "lower" else (lo, hi + width / 2)
        low, high = param.from_scale(new_lo), param.from_scale(new_hi)
        if not param.is_log and param.low >= 0:  # type: ignore[operator]
            low = max(low, 0.0)
        if param.type == "int":
            low, high = math.floor(low), math.ceil(high)
        if (low, high) == (param.low, param.high):
            continue
        out.append(BorderWarning(stage, key, edge, float(best[key]), float(param.low), float(param.high),  # type: ignore[arg-type]
                                 low, high, param.is_log))
    return out


# -- one trial -----------------------------------------------------------------------------------
class _Diverged(Exception):
    pass


class TrialMonitor(Callback):
    """Stops a trial at once when the training loss or the monitored metric is NaN/Inf, reports the
    metric to the Optuna trial after each validation and prunes it when the pruner says so.

    (optuna-integration's ``PyTorchLightningPruningCallback`` targets the ``pytorch_lightning``
    namespace; this one is the few lines lightkit needs.)

    Args:
        metric: the validation metric (``val/acc``).
        trial: the Optuna trial to report to; None records the values only.
    """

    def __init__(self, metric: str, trial: Any | None = None) -> None:
        self.metric = metric
        self.trial = trial
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "isfinite") and not bool(loss.detach().isfinite().all()):
            raise _Diverged(f"train loss {float(loss)} at step {trainer.global_step}")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
            raise SearchError(f"search: metric {self.metric!r} was not logged at validation (logged: {logged}); "
                              f"set metric to one of them, and keep a validation split (data val_fraction > 0).")
        value = float(value)
        if not math.isfinite(value):
            raise _Diverged(f"{self.metric}={value} at step {trainer.global_step}")
        self.values.append(value)
        if self.trial is not None:
            import optuna

            self.trial.report(value, step=len(self.values) - 1)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric}={value:.4g} below the median at validation {len(self.values)}")


@dataclass
class TrialOutcome:
    """What :func:`fit_trial` measured. ``status``: ``complete``, ``pruned`` or ``diverged``."""

    status: str
    value: float | None
    values: list[float]
    epochs: int
    steps: int
    seconds: float
    reason: str = ""


def _base_args(config: SearchConfig) -> list[str]:
    paths = config.base_paths()
    if config.base is not None:
        path = Path(config.run_dir) / "base.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(config.base, sort_keys=False)
        if not path.is_file() or path.read_text() != text:  # atomic: other workers may be reading it
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        paths = [str(path)]
    return [arg for p in paths for arg in ("--config", p)]


def _trial_overrides(config: SearchConfig, trial_dir: Path, wandb_name: str | None, stage: str) -> dict[str, Any]:
    loggers: list[dict[str, Any]] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                      "init_args": {"save_dir": str(trial_dir), "name": "logs", "version": ""}}]
    if wandb_name is not None:
        loggers.append({"class_path": "lightkit.loggers.WandbLogger",
                        "init_args": {"project": config.wandb_project, "name": wandb_name,
                                      "save_dir": str(Path(config.run_dir)), "group": config.study_name,
                                      "tags": [stage], "reuse_active_run": False}})
    return {"trainer.default_root_dir": str(trial_dir), "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False, "trainer.logger": loggers, "test_after_fit": False}


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-fit banners ("GPU available", "Seed set") are noise when fits are trials."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "optuna")
    levels = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _parse_or_raise(build: Callable[[], Any], what: str) -> Any:
    """Run a LightningCLI parse; turn its usage-and-exit into a one-line :class:`SearchError`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build()
    except SystemExit as exc:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "error:" in ln), lines[-1] if lines else f"exit {exc.code}")
        detail = " ".join(lines[lines.index(detail):])[:400] if detail in lines else detail
        raise SearchError(f"search: the fit config rejects {what}: {detail} -- check the key against "
                          f"`python cli.py fit --config <base> --print_config`.") from None


def fit_trial(config: SearchConfig, params: dict[str, Any], stage: Stage, trial_dir: Path,
              trial: Any | None = None, wandb_name: str | None = None) -> TrialOutcome:
    """Fit one configuration through :func:`lightkit.cli.main`: the base config, the search's and the
    stage's overrides, ``params`` (dotted keys -> YAML values). Writes ``trial_dir/config.yaml`` (the
    full resolved fit config) and returns the validation ``metric`` per validation and its best."""
    import optuna

    from lightkit.cli import main

    trial_dir.mkdir(parents=True, exist_ok=True)
    overrides = {**config.overrides, **stage.fit_overrides(), **params,
                 **_trial_overrides(config, trial_dir, wandb_name, stage.name)}
    args = _base_args(config) + _dotted_args(overrides)
    cli = _parse_or_raise(lambda: main(args, run=False), f"the trial overrides {sorted(params)}")
    (trial_dir / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
    monitor = TrialMonitor(config.metric, trial if stage.prune else None)
    cli.trainer.callbacks.append(monitor)
    status, reason = "complete", ""
    t0 = time.perf_counter()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except _Diverged as exc:
        status, reason = "diverged", str(exc)
    except optuna.TrialPruned as exc:
        status, reason = "pruned", str(exc)
    finally:
        for logger in cli.trainer.loggers:
            if type(logger).__name__ == "WandbLogger" and logger.experiment is not None:
                logger.experiment.finish()
    seconds = time.perf_counter() - t0
    pick = max if config.direction == "maximize" else min
    value = pick(monitor.values) if monitor.values and status == "complete" else None
    if status == "complete" and value is None:
        raise SearchError(f"search: the trial in {trial_dir} finished without a validation; the metric "
                          f"{config.metric!r} needs validation (trainer.limit_val_batches > 0, check_val_every_n_epoch <= max_epochs).")
    if not config.keep_checkpoints and stage.retrain_top == 0:
        for ckpt in trial_dir.rglob("*.ckpt"):
            ckpt.unlink()
    return TrialOutcome(status, value, monitor.values, cli.trainer.current_epoch, cli.trainer.global_step,
                        seconds, reason)


# -- sampling ------------------------------------------------------------------------------------
def _sampler_for(kind: str, seed: int, study_name: str, number: int) -> Any:
    import optuna

    trial_seed = zlib.crc32(f"{seed}/{study_name}/{number}".encode())
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=trial_seed, n_startup_trials=5, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=trial_seed)


class _PerTrialSeedSampler:
    """Delegates to a sampler seeded by (seed, study, trial number): distinct draws in every worker
    (trial numbers are unique in the storage) and one worker's search is reproducible."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind, self.seed = kind, seed
        self._cache: dict[tuple[str, int], Any] = {}

    def _of(self, study: Any, trial: Any) -> Any:
        key = (study.study_name, trial.number)
        if key not in self._cache:
            self._cache = {key: _sampler_for(self.kind, self.seed, study.study_name, trial.number)}
        return self._cache[key]

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self._of(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._of(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return self._of(study, trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._of(study, trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._of(study, trial).after_trial(study, trial, state, values)


def _make_sampler(kind: str, seed: int) -> Any:
    import optuna

    cls = type("PerTrialSeedSampler", (_PerTrialSeedSampler, optuna.samplers.BaseSampler), {})
    return cls(kind, seed)


def _retry_callback(config: SearchConfig) -> tuple[str, Any]:
    """Optuna's callback that re-queues a dead trial with its parameters, at most ``max_retry`` times,
    and the ``RDBStorage`` argument it goes in."""
    import optuna

    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        return "heartbeat_stale_trial_callback", optuna.storages.RetryHeartbeatStaleTrialCallback(config.max_retry)
    return "failed_trial_callback", optuna.storages.RetryFailedTrialCallback(config.max_retry)


def _storage(config: SearchConfig) -> Any:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = config.storage_url()
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    retry = dict([_retry_callback(config)])
    for attempt in range(5):  # workers starting together may race on creating the tables
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=config.heartbeat_interval,
                                              grace_period=config.grace_period, **retry)
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _ranked(trials: Sequence[Any], direction: str) -> list[Any]:
    import optuna

    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * t.value, t.number))


# -- the search ----------------------------------------------------------------------------------
@dataclass
class StageSummary:
    """One stage: the space it sampled (narrowed ranges), counts by outcome, its best trial and warnings."""

    name: str
    study: str
    space: dict[str, dict[str, Any]]
    n_complete: int
    n_pruned: int
    n_diverged: int
    best_value: float | None
    best_params: dict[str, Any]
    warnings: list[str]
    seconds: float


@dataclass
class SearchResult:
    """The outcome of :func:`run_search`: the best trial (of the last stage), per-stage summaries,
    border warnings, and the paths written."""

    best_value: float | None
    best_params: dict[str, Any]
    best_stage: str
    best_config: Path | None
    stages: list[StageSummary]
    trials: list[dict[str, Any]]
    warnings: list[BorderWarning]
    run_dir: Path
    storage: str
    seconds: float


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _space_dict(space: dict[str, Param]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in asdict(p).items() if v is not None and not (f == "log" and not v)} for k, p in space.items()}


def _params_of(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    return {k: space[k].decode(v) for k, v in trial.params.items() if k in space}


def _validate_keys(config: SearchConfig) -> Any:
    """Build one trial's CLI (parse + instantiate, no fit) and check every space key parses; return the parser."""
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


def _objective(config: SearchConfig, stage: Stage, space: dict[str, Param], stage_dir: Path) -> Callable[[Any], float]:
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


def _stage_space(config: SearchConfig, index: int, previous: list[Any], prev_space: dict[str, Param]) -> dict[str, Param]:
    stage = config.stages[index]
    if not stage.narrow_top_k:
        return dict(config.space)
    top = previous[: stage.narrow_top_k]
    if not top:
        raise SearchError(f"search: stage {stage.name!r} narrows around the best trials of the previous stage, "
                          f"but it has no completed trial; give the previous stage more n_trials or a looser pruner.")
    return {k: narrow(p, [t.params[k] for t in top if k in t.params], config.narrow_margin, within=config.space[k])
            for k, p in prev_space.items()}


CLAIM_ATTR = "claimed_by"


def _claim(number: int) -> str:
    # The trial number is part of the claim: a retried trial inherits the dead one's user attrs.
    return f"{_worker()}#{number}"


def _fail_unclaimed_trials(study: Any, config: SearchConfig) -> None:
    """Fail, and retry like a stale one, every RUNNING trial that no objective has claimed although it
    started more than ``grace_period`` seconds ago.

    Optuna fails a dead worker's trial once its heartbeat is older than the grace period, but a worker
    killed between creating a trial and writing its first heartbeat leaves a RUNNING trial with no
    heartbeat at all, which Optuna never fails (its stale check skips trials without one): every
    worker would then wait for it at the stage barrier for ever. lightkit's objective claims its trial
    first thing, milliseconds after Optuna creates it, so an unclaimed trial that old has no worker.
    """
    import datetime

    import optuna

    now = datetime.datetime.now()  # Optuna stamps datetime_start with the worker's datetime.now()
    grace = datetime.timedelta(seconds=config.grace_period)
    dead = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get(CLAIM_ATTR, "").rpartition("#")[2] != str(t.number)
            and t.datetime_start is not None and now - t.datetime_start > grace]
    if not dead:
        return
    _, retry = _retry_callback(config)
    for trial in dead:
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        log.warning(f"search: trial {trial.number} of {study.study_name} was started {(now - trial.datetime_start).seconds} s "
                    f"ago by a worker that died before running it; failed and queued again with its parameters.")
        retry(study, study.get_trials(deepcopy=True)[trial.number])


def _run_stage(config: SearchConfig, index: int, storage: Any, space: dict[str, Param], candidates: list[Any],
               progress: Any) -> Any:
    import optuna

    stage = config.stages[index]
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                          n_warmup_steps=config.pruner_warmup_steps)
              if stage.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=config.study(index), storage=storage, direction=config.direction,
                                sampler=_make_sampler(config.sampler, config.seed), pruner=pruner, load_if_exists=True)
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
        with warnings.catch_warnings():  # "experimental since v2.9": stable in practice, and the resume relies on it
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
    found = border_warnings(space, dict(best.params), stage.name, config.border_fraction) if best and not stage.retrain_top else []
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


def export_best_config(config: SearchConfig, parser: Any, params: dict[str, Any], stage: Stage, path: Path) -> Path:
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
        columns = (TextColumn("search {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
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
    _write_outputs(config, result)
    return result


# -- outputs -------------------------------------------------------------------------------------
def _write_outputs(config: SearchConfig, result: SearchResult) -> None:
    from lightkit.search_report import log_wandb_summary, plot_metric_vs_params, plot_stage_narrowing

    run_dir = result.run_dir
    keys = list(config.space)
    with open(run_dir / "trials.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stage", "number", "state", "status", "value", *keys, "epochs", "seconds", "worker"])
        for r in result.trials:
            writer.writerow([r["stage"], r["number"], r["state"], r["status"], r["value"],
                             *[r["params"].get(k) for k in keys], r["epochs"], r["seconds"], r["worker"]])
    summary = {"study_name": config.study_name, "storage": result.storage, "metric": config.metric,
               "direction": config.direction, "best_value": result.best_value, "best_params": result.best_params,
               "best_stage": result.best_stage, "best_config": str(result.best_config) if result.best_config else None,
               "stages": [asdict(s) for s in result.stages], "seconds": result.seconds}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plots = [plot_metric_vs_params(config, result, run_dir / "metric_vs_params.png"),
             plot_stage_narrowing(config, result, run_dir / "stage_narrowing.png")]
    if config.wandb:
        log_wandb_summary(config, result, [p for p in plots if p is not None])
