"""Search configuration: :class:`SearchConfig`, :class:`Param`, :class:`Stage`, their validation,
and the dotted-override encoding shared by the trials and ``best.yaml``. No Optuna, no Lightning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["Param", "ParamType", "SearchConfig", "SearchError", "Stage"]

ParamType = Literal["loguniform", "uniform", "int", "categorical"]
_PARAM_TYPES = ("loguniform", "uniform", "int", "categorical")
_PRIMITIVE = (type(None), bool, int, float, str)


class SearchError(ValueError):
    """A search config or run problem; the message names the bad value and the fix."""


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
            raise SearchError(f"search: space.{key}.type={self.type!r} is not a distribution; use one of "
                              f"{list(_PARAM_TYPES)}.")
        if self.type == "categorical":
            if not self.choices:
                raise SearchError(f"search: space.{key} is categorical but has no choices; give choices: [a, "
                                  "b, ...].")
            return
        if self.low is None or self.high is None:
            raise SearchError(f"search: space.{key} ({self.type}) needs low and high, e.g. {{type: "
                              f"{self.type}, low: ..., high: ...}}.")
        if not self.low < self.high:
            raise SearchError(f"search: space.{key} has low={self.low} >= high={self.high}; give low < high.")
        if self.is_log and self.low <= 0:
            raise SearchError(f"search: space.{key} is log-scaled but low={self.low} <= 0; give low > 0 "
                              "(e.g. 1e-5).")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise SearchError(f"search: space.{key} is int but low={self.low}, high={self.high} are not "
                              "whole numbers.")

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
        return {
            "trainer.max_epochs": self.max_epochs,
            "trainer.limit_train_batches": self.limit_train_batches,
            **self.overrides,
        }


def _default_stages() -> list[Stage]:
    return [
        Stage("coarse", n_trials=20, max_epochs=1),
        Stage("fine", n_trials=10, max_epochs=3, narrow_top_k=5),
        Stage("final", retrain_top=3, max_epochs=10, prune=False),
    ]


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
                              "model.init_args.optimizer.init_args.lr: {type: loguniform, low: 1e-5, high: "
                              "1e-1}.")
        for key, param in self.space.items():
            param.check(key)
        if (self.base_config is None) == (self.base is None):
            raise SearchError("search: give exactly one of base_config (a fit config path) and base (the fit "
                              "config "
                              "embedded); got " + ("both." if self.base is not None else "neither."))
        for path in self.base_paths():
            if not Path(path).is_file():
                raise SearchError(f"search: base_config {path!r} does not exist; give the path of a fit "
                                  "config "
                                  f"(e.g. configs/quickstart.yaml) or embed the config under base:.")
        if not self.stages:
            raise SearchError("search: stages is empty; give at least one stage with n_trials > 0.")
        for i, stage in enumerate(self.stages):
            if (stage.n_trials > 0) == (stage.retrain_top > 0):
                raise SearchError(f"search: stage {stage.name!r} needs exactly one of n_trials > 0 (sample) "
                                  "and "
                                  f"retrain_top > 0 (retrain the best); got n_trials={stage.n_trials}, "
                                  f"retrain_top={stage.retrain_top}.")
            if i == 0 and (stage.retrain_top or stage.narrow_top_k):
                raise SearchError(f"search: the first stage {stage.name!r} has nothing to narrow or retrain; "
                                  "give it "
                                  f"n_trials and narrow_top_k: 0.")
            if stage.max_epochs < 1:
                raise SearchError(f"search: stage {stage.name!r} max_epochs={stage.max_epochs} must be >= 1.")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise SearchError(f"search: stage names {names} repeat; give each stage its own name.")
        if not 0 < self.border_fraction < 0.5:
            raise SearchError(f"search: border_fraction={self.border_fraction} must be in (0, 0.5); 0.15 is "
                              "the default.")

    def base_paths(self) -> list[str]:
        if self.base_config is None:
            return []
        return [self.base_config] if isinstance(self.base_config, str) else list(self.base_config)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.run_dir).resolve() / 'study.db'}"

    def study(self, index: int) -> str:
        return f"{self.study_name}/{index + 1}-{self.stages[index].name}"


def _encode(choice: Any) -> Any:
    return (
        choice if isinstance(choice, _PRIMITIVE) else yaml.safe_dump(choice, default_flow_style=True).strip()
    )


def _cli_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _dotted_args(overrides: dict[str, Any]) -> list[str]:
    return [f"--{key}={_cli_value(value)}" for key, value in overrides.items()]

