"""One trial: an ordinary lightkit fit through :func:`lightkit.cli.main`, watched by :class:`TrialMonitor`."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from lightkit.search.config import SearchConfig, SearchError, Stage, _dotted_args

__all__ = ["TrialMonitor", "TrialOutcome", "fit_trial"]


class _Diverged(Exception):
    pass


class TrialMonitor(Callback):
    """Stops a trial at once when the training loss or the monitored metric is NaN/Inf, reports the
    metric to the Optuna trial after each validation and prunes it when the pruner says so.

    Why not optuna-integration's ``PyTorchLightningPruningCallback`` (on ``lightning.pytorch`` since
    2023): it reports at ``step=current_epoch``, so the several validations per epoch of a stage with
    ``trainer.val_check_interval < 1`` land on one step and Optuna keeps only the first; it only warns when
    the
    metric is missing, where a search should stop with the logged names; it does not look at the
    training loss, so a diverged trial runs to its next validation; and it would add a dependency for
    these few lines.

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
            raise SearchError(f"search: metric {self.metric!r} was not logged at validation (logged: "
                              f"{logged}); "
                              "set metric to one of them, and keep a validation split (data val_fraction > "
                              "0).")
        value = float(value)
        if not math.isfinite(value):
            raise _Diverged(f"{self.metric}={value} at step {trainer.global_step}")
        self.values.append(value)
        if self.trial is not None:
            import optuna

            self.trial.report(value, step=len(self.values) - 1)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric}={value:.4g} below the median at validation "
                                         f"{len(self.values)}")


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


def _trial_overrides(
    config: SearchConfig, trial_dir: Path, wandb_name: str | None, stage: str
) -> dict[str, Any]:
    loggers: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(trial_dir), "name": "logs", "version": ""},
        }
    ]
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
    """Run a LightningCLI parse; turn its error (an ``ArgumentError``, or a usage-and-exit from a parser
    that exits on error) into a one-line :class:`SearchError`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build()
    except argparse.ArgumentError as exc:
        detail = " ".join(str(exc).split())[:400]
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
    from lightkit.functional.diagnose import TrainingDiverged

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
    except (_Diverged, TrainingDiverged) as exc:  # TrainingDiverged: a Diagnose callback in the base config
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
                          f"{config.metric!r} needs validation (trainer.limit_val_batches > 0, "
                          "check_val_every_n_epoch <= max_epochs).")
    if not config.keep_checkpoints and stage.retrain_top == 0:
        for ckpt in trial_dir.rglob("*.ckpt"):
            ckpt.unlink()
    return TrialOutcome(status, value, monitor.values, cli.trainer.current_epoch, cli.trainer.global_step,
                        seconds, reason)

