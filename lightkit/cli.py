"""``lightkit`` command line: LightningCLI with lightkit's links, defaults and a run summary.

    python cli.py fit --config configs/quickstart.yaml                  # -> runs/quickstart/version_N/
    python cli.py test --config configs/quickstart.yaml --ckpt_path best
    python cli.py predict --config configs/quickstart.yaml --ckpt_path best --data.init_args.predict_path imgs/
    python cli.py fit --config configs/quickstart.yaml --ckpt_path last   # resume the newest run
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

# Before albumentations / wandb / huggingface_hub are imported by anything: no update check, no
# error-reporting probe at exit. HF_HUB_OFFLINE is NOT forced: users with a network keep the hub.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")

import torch  # noqa: E402
from lightning.pytorch import LightningDataModule, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import BasePredictionWriter  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lightkit.callbacks.budget import TrainingBudget  # noqa: E402
from lightkit.callbacks.prediction_writer import PredictionWriter  # noqa: E402
from lightkit.cli_checks import check_argv, check_ckpt_overrides, check_config_values, int_first_unions  # noqa: E402
from lightkit.commands import COMMANDS, command_module, config_commands  # noqa: E402
from lightkit.edge import RunFailed, UsageError, run_at_edge  # noqa: E402
from lightkit.ensemble import EnsembleResult, ensemble_predict  # noqa: E402
from lightkit.ensemble_fit import (  # noqa: E402
    check_ensemble_value,
    ensemble_size,
    split_is_seeded,
    train_members,
    train_size,
)
from lightkit.functional.diagnose import TrainingDiverged  # noqa: E402
from lightkit.runs import place_run, resolve_checkpoint_keyword  # noqa: E402

__all__ = ["LightkitCLI", "main"]

# torch's OneCycleLR past its end, as it happens when a fit resumes with a longer budget.
_SCHEDULE_END = re.compile(r"Tried to step (\d+) times\. The specified number of total steps is (\d+)")


class LightkitCLI(LightningCLI):
    """LightningCLI with the data module's ``num_classes``, ``in_chans`` and ``class_names`` linked
    into the model (one source of truth), an optional test of the best checkpoint after ``fit``, a
    summary table, and a prediction CSV writer on ``predict``.

    Parse errors raise jsonargparse's ``ArgumentError`` (no usage dump); :func:`main` at the command
    line turns them, like every other error, into one line."""

    def __init__(self, *args: Any, parser_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        parser_kwargs = dict(parser_kwargs or {})
        parser_kwargs.setdefault("exit_on_error", False)
        self.run_dir: Path | None = None
        self._argv: list[str] = []
        int_first_unions(kwargs.get("trainer_class", Trainer).__init__)  # limit_*_batches 1 stays one batch
        super().__init__(*args, parser_kwargs=parser_kwargs, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="After fit, test the best checkpoint (or the last weights) on the test split and print a summary.",
        )
        for command in config_commands():
            command.add_arguments(parser)
        parser.add_argument(
            "--pixel_baseline", type=bool, default=False,
            help="After fit, fit logistic regression on the raw downsampled pixels of the same train split and "
                 "print its test accuracy next to the model's (a floor the network must beat).",
        )
        parser.add_argument(
            "--sanity_first", type=bool, default=False,
            help="fit: run the `sanity` checks (the config's sanity: section) in this process before training; "
                 "a failed check stops the command (exit 1) before the first step. Costs the checks only, not a "
                 "second start-up; the training that follows is the same as without it.",
        )
        parser.add_argument(
            "--summary_json", type=str | None, default=None,
            help="fit: also write the summary table (test metrics, steps, baseline, verdicts) to this JSON file; "
                 "test: the test metrics (with --ensemble_ckpts: the ensemble's and each member's).",
        )
        parser.add_argument(
            "--run_dir", type=str | None, default=None,
            help="Folder for every output of this command (logs, checkpoints, config.yaml, plots, predictions). "
                 "'auto' (the default from the command line): a new runs/<config name>/version_<N>, or the folder of "
                 "the checkpoint a fit resumes from; null: as the config's loggers and trainer say.",
        )
        parser.add_argument(
            "--ensemble_ckpts", type=list[str] | None, default=None,
            help="predict / test: average the softmax of these checkpoints (independent runs or snapshots), "
                 "loaded one at a time; prints each member and the ensemble, writes a CSV in the log dir.",
        )
        parser.add_argument(
            "--ensemble", type=int | Literal["auto"], default=1,
            help="fit: train this many models of the config one after another (seed_everything, +1, +2 ...; the "
                 "same data split; members 2.. in <run folder>/member_<i>/) and test the mean of their softmax. "
                 "auto: 3 on a train split of at most 1,000 images on one device, else 1. A rerun reuses finished "
                 "members.",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.init_args.in_chans", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    # -- instantiation -----------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        _resolve_pretrained_path(cfg)
        check_config_values(cfg)
        check_ensemble_value(cfg.get("ensemble", 1))
        _drop_lr_monitor_without_logger(cfg)
        self.run_dir = place_run(cfg, self.subcommand) if cfg.get("run_dir") else None

    # -- fit ---------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self._t0 = time.perf_counter()
        from lightkit.callbacks.regularization import RegularizationSummary

        if not any(isinstance(cb, RegularizationSummary) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(RegularizationSummary())  # one log line: which regularizers are on
        if not any(isinstance(cb, TrainingBudget) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(TrainingBudget())  # counts the steps; warns when far too few
        self._preflight_baseline: Any = None
        members = self.config[self.subcommand].get("ensemble", 1)
        if members != "auto":
            ensemble_size(members, None, self.trainer.world_size)  # refuses N > 1 on several processes, before training
        if self.config[self.subcommand].get("sanity_first"):
            self._sanity_first()
        self._track_config()

    def _sanity_first(self) -> None:
        """``--sanity_first``: the ``sanity`` command's checks before the first step, in this process.
        Every rank runs them (same seed, same verdict, no collective call); rank zero writes the report."""
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        from lightkit.commands import sanity

        cfg = self.config[self.subcommand]
        opts = cfg.sanity
        folder = Path(self.run_dir or self.trainer.default_root_dir)
        out = Path(opts.output) if opts.output else folder / "sanity.json"
        report, self._preflight_baseline = sanity.check(opts, self.model, self.datamodule,
                                                        self.trainer.strategy.root_device, out,
                                                        write=rank_zero_only.rank == 0)
        if not report.passed:
            failed = report.failed()
            first = failed[0]
            raise RunFailed(f"sanity_first: {len(failed)} check(s) failed before training ("
                            f"{', '.join(c.name for c in failed)}; report {out}): {first.name}: {first.message}; "
                            f"{first.hint or 'see the report'}. Nothing was trained; fix it, or fit without "
                            f"--sanity_first.")

    def _track_config(self) -> None:
        """The whole resolved config, flat (``optimizer.lr``, ``trainer.max_epochs`` ...), into each W&B
        run's config, and the YAML into the run's files (uploaded with it)."""
        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not self.trainer.is_global_zero:
            return
        from importlib.metadata import PackageNotFoundError, version

        from lightkit.loggers import flat_config

        try:
            lightkit_version = version("lightkit")
        except PackageNotFoundError:
            lightkit_version = "unknown"
        cfg = self.config[self.subcommand]
        flat = flat_config(cfg.clone().as_dict(), lightkit_version)
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            run = logger.experiment
            if not hasattr(run, "config"):  # disabled W&B gives a dummy run
                continue
            run.config.update(flat, allow_val_change=True)
            if getattr(run, "dir", None):
                Path(run.dir, "lightkit_config.yaml").write_text(text)

    def fit(self, model: LightningModule, datamodule: LightningDataModule | None = None, **kwargs: Any) -> None:
        """``trainer.fit``; a :class:`TrainingDiverged` from ``Diagnose`` is kept for :meth:`after_fit`."""
        self._diverged: TrainingDiverged | None = None
        try:
            self.trainer.fit(model, datamodule=datamodule, **kwargs)
        except TrainingDiverged as err:
            self._diverged = err
        except ValueError as err:
            found = _SCHEDULE_END.search(str(err))
            ckpt = kwargs.get("ckpt_path")
            if not (found and ckpt):
                raise
            raise UsageError(
                f"ckpt_path={ckpt}: its LR schedule was built for {found[2]} optimizer steps and this fit asks for "
                f"step {found[1]}: a resumed fit keeps the interrupted run's length. Resume with its "
                f"trainer.max_epochs / max_steps, or train longer as a new fit that starts from its weights: "
                f"--model.init_args.pretrained {ckpt} (the encoder's; the head starts fresh)."
            ) from None

    def after_fit(self) -> None:
        fit_seconds = time.perf_counter() - self._t0
        cfg = self.config[self.subcommand]
        trainer = self.trainer
        diverged = getattr(self, "_diverged", None)
        if trainer.interrupted and diverged is None:
            return
        results: dict[str, float] = {}
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if diverged is not None:
            # No checkpoint is written after the divergence: the best one saved is from good weights.
            if not ckpt or not Path(ckpt).is_file():
                raise RunFailed(f"the run diverged at step {diverged.step} before any checkpoint was saved: nothing "
                                f"to test or resume; {_fix_of(diverged)}")
            self._diverged_note = (f"diverged at step {diverged.step}: stopped there; tested the last good "
                                   f"checkpoint ({Path(ckpt).name}); {_fix_of(diverged)}")
        if cfg.get("test_after_fit", True) and self.datamodule is not None and _has_test(self.datamodule):
            out = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt or None, verbose=False)
            results = {k: float(v) for k, v in (out[0] if out else {}).items()}
        log_dir = trainer.log_dir  # a broadcast from rank zero under DDP: every rank must call it
        counts = self.model.prediction_counts("test") if results and hasattr(self.model, "prediction_counts") else None
        ensemble = self._ensemble_members(ckpt, bool(results)) if diverged is None and cfg.get("ensemble", 1) != 1 \
            else None
        if ensemble is not None and ensemble.metrics:
            results["ensemble/test_acc"] = ensemble.metrics["acc"]
            results["ensemble/test_nll"] = ensemble.metrics["nll"]
            for logger in trainer.loggers:
                logger.log_metrics({k: v for k, v in results.items() if k.startswith("ensemble/")},
                                   step=trainer.global_step)
                logger.save()
        if trainer.is_global_zero:
            extra = _after_fit_checks(trainer, self.datamodule, results, counts, bool(cfg.get("pixel_baseline")),
                                      getattr(self, "_preflight_baseline", None))
            if ensemble is not None:
                extra["ensemble"] = ensemble
            if diverged is not None:
                extra["verdicts"].insert(0, self._diverged_note)
            total = time.perf_counter() - self._t0
            summary = _print_summary(trainer, results, fit_seconds, total, ckpt, log_dir, extra)
            self._write_summary_json(summary)
            _finish_wandb(trainer)

    def _ensemble_members(self, ckpt: str, score: bool) -> EnsembleResult | None:
        """``--ensemble``: train (or reuse) members 2..N after this fit and score the N best checkpoints on the
        test split (``score``). None when the setting comes out at one model."""
        cfg = self.config[self.subcommand]
        trainer = self.trainer
        count, why = ensemble_size(cfg.get("ensemble", 1), train_size(self.datamodule), trainer.world_size)
        if why and trainer.is_global_zero:
            print(f"lightkit: {why}", flush=True)
        if count < 2:
            return None
        if not ckpt or not Path(ckpt).is_file():
            raise RunFailed("ensemble: this fit saved no checkpoint, and the ensemble averages the members' saved "
                            "weights: keep a ModelCheckpoint in trainer.callbacks (or --ensemble 1).")
        seed = cfg.get("seed_everything")
        if not isinstance(seed, int) or isinstance(seed, bool):
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        datamodule = self.datamodule
        data_seed = getattr(datamodule, "seed", None) if split_is_seeded(datamodule) else None
        run = Path(self.run_dir or trainer.log_dir or trainer.default_root_dir)
        ckpts = [ckpt, *train_members(self._argv, seed, count, run, data_seed)]
        listed = "[" + ",".join(ckpts) + "]"
        if not score:
            print(f"lightkit: ensemble of {count}: test it with `test --config ... --ensemble_ckpts \"{listed}\"`",
                  flush=True)
            return EnsembleResult(ckpts, torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.long))
        with warnings.catch_warnings():  # Lightning's note that the fit's callbacks are not in this predict
            warnings.filterwarnings("ignore", message=".*when using `ckpt_path`, callbacks used to create")
            result = ensemble_predict(ckpts, datamodule)
        result.to_csv(run / "ensemble_test.csv", class_names=self.model.hparams.get("class_names"),
                      items=getattr(datamodule, "predict_items", None))
        print(f"lightkit: predict with all {count}: `predict --config ... --ensemble_ckpts \"{listed}\" "
              f"--data.init_args.predict_path <images>`", flush=True)
        return result

    # -- checkpoints -------------------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Lightning re-parses the model from ``--ckpt_path``'s hyperparameters. A checkpoint saved
        outside a subclass-mode CLI has no ``_class_path``; the config's model then stands as given.
        ``last`` / ``best`` are first resolved to the newest run's file (with ``--run_dir``); a file that
        is no Lightning checkpoint, or a ``--model...`` value the checkpoint replaces, is refused."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        if cfg.get("run_dir"):
            resolve_checkpoint_keyword(cfg)
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            try:
                saved = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True)
                hparams = saved.get("hyper_parameters", {})
            except Exception as err:  # noqa: BLE001 - safetensors, pickle, zip: all mean "not a checkpoint"
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UsageError(
                    f"ckpt_path={ckpt_path} is not a Lightning checkpoint ({type(err).__name__}: {reason[:120]}); give "
                    f"a .ckpt written by fit (runs/<name>/version_N/checkpoints/), or pass a weights file as "
                    f"model.init_args.pretrained."
                ) from None
            if "_class_path" not in hparams:
                return
        elif ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            raise UsageError(f"ckpt_path={ckpt_path}: no such file (working directory {Path.cwd()}); give a .ckpt "
                             f"written by fit, or `last` / `best` for the newest run's.")
        before = dict(cfg.model.get("init_args") or {}) if hasattr(cfg.get("model"), "get") else {}
        super()._parse_ckpt_path()
        if subcommand != "fit" and before:
            after = dict(self.config[subcommand].model.get("init_args") or {})
            check_ckpt_overrides(self._argv, before, after, str(ckpt_path))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._argv = list(args) if isinstance(args, list | tuple) else sys.argv[1:]
        super().parse_arguments(parser, args)

    # -- predict / test ----------------------------------------------------------------------
    def before_predict(self) -> None:
        if self.config[self.subcommand].get("summary_json"):
            raise UsageError("--summary_json is written by fit and test; predict writes its predictions to a CSV in "
                             "the run folder: remove --summary_json.")
        if self.config[self.subcommand].get("ensemble_ckpts"):
            return
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    def predict(self, model: LightningModule, datamodule: LightningDataModule | None = None, **kwargs: Any) -> Any:
        ckpts = self.config[self.subcommand].get("ensemble_ckpts")
        if ckpts:
            return self._ensemble(list(ckpts), model, datamodule, "ensemble_predictions.csv")
        return self.trainer.predict(model, datamodule=datamodule, **kwargs)

    def test(self, model: LightningModule, datamodule: LightningDataModule | None = None, **kwargs: Any) -> Any:
        ckpts = self.config[self.subcommand].get("ensemble_ckpts")
        if ckpts:
            if datamodule is not None and getattr(datamodule, "predict_path", None) is not None:
                raise ValueError("test --ensemble_ckpts scores the test split; remove data.init_args.predict_path "
                                 "(or run `predict` to label your own images).")
            result = self._ensemble(list(ckpts), model, datamodule, "ensemble_test.csv")
            self._write_summary_json({
                **{f"ensemble/test_{k}": v for k, v in result.metrics.items()},
                "ensemble/members": list(result.ckpt_paths),
                **{f"ensemble/member_test_{k}": [m[k] for m in result.member_metrics] for k in result.metrics},
            })
            return result
        out = self.trainer.test(model, datamodule=datamodule, **kwargs)
        self._write_summary_json({**{k: float(v) for k, v in (out[0] if out else {}).items()},
                               "checkpoint": kwargs.get("ckpt_path")})
        return out

    def _write_summary_json(self, summary: dict[str, Any]) -> None:
        """``--summary_json``: the figures the fit / test printed, as JSON (rank zero)."""
        path = self.config[self.subcommand].get("summary_json")
        if path and self.trainer.is_global_zero:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(summary, indent=2))

    def _ensemble(self, ckpts: list[str], model: LightningModule, datamodule: LightningDataModule | None,
                  csv_name: str) -> EnsembleResult:
        """Average the checkpoints' probabilities (one model in memory), print each member and the
        ensemble, write a CSV in the log dir."""
        if datamodule is None:
            raise ValueError("--ensemble_ckpts needs a data module (the config's `data:` section).")
        if self.trainer.world_size > 1:
            raise ValueError("--ensemble_ckpts runs in one process; set trainer.devices=1 (predictions under DDP "
                             "are split across ranks).")
        self.trainer.callbacks = [cb for cb in self.trainer.callbacks if not isinstance(cb, BasePredictionWriter)]
        result = ensemble_predict(ckpts, datamodule, model=model, trainer=self.trainer)
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / csv_name
        result.to_csv(out, class_names=model.hparams.get("class_names"),
                      items=getattr(datamodule, "predict_items", None))
        Console(width=120).print(result.table())
        Console(width=120).print(f"lightkit: wrote {len(result.index)} ensemble predictions to {out}")
        return result



def _fix_of(err: TrainingDiverged) -> str:
    """The fix part of Diagnose's divergence message (after "The LR is likely ...", or its last sentence)."""
    text = str(err)
    for marker in ("The LR is likely", "Lower ", "lower "):
        if marker in text:
            return text[text.index(marker):]
    return text.rsplit(". ", 1)[-1]


def _drop_lr_monitor_without_logger(cfg: Any) -> None:
    """``--trainer.logger false`` on a config with a ``LearningRateMonitor``: Lightning refuses the pair;
    the monitor has nothing to write to, so it is left out, with one line."""
    trainer = cfg.get("trainer")
    callbacks = trainer.get("callbacks") if trainer is not None else None
    if trainer is None or trainer.get("logger") is not False or not isinstance(callbacks, list):
        return
    kept = [c for c in callbacks if not str(getattr(c, "class_path", "")).endswith("LearningRateMonitor")]
    if len(kept) != len(callbacks):
        from lightning.pytorch.utilities import rank_zero_info

        trainer["callbacks"] = kept
        rank_zero_info("lightkit: trainer.logger=false: LearningRateMonitor left out (it needs a logger).")


def _finish_wandb(trainer: Trainer) -> None:
    """Close the W&B run so its offline files are complete (and `wandb sync`-able) when fit returns."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # noqa: SLF001 - no public "is started"
            logger.experiment.finish()


def _checkpoint_files(trainer: Trainer) -> list[str]:
    """The checkpoint files that exist in the checkpoint callbacks' folders, newest last."""
    found: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        if folder and Path(folder).is_dir():
            found += [p for p in Path(folder).glob("*.ckpt") if p not in found]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def _has_test(datamodule: LightningDataModule) -> bool:
    return type(datamodule).test_dataloader is not LightningDataModule.test_dataloader


def _wandb_dir(trainer: Trainer) -> str | None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            return getattr(run, "dir", None) and str(Path(run.dir).parent)
    return None


def _resolve_pretrained_path(cfg: Any) -> None:
    """A relative ``model.init_args.pretrained`` path (or one in a mapping of weights by channels) is looked
    up next to the config file(s) first, then in the working directory, and replaced by the absolute path found.

    Raises:
        PretrainedWeightsError: a path-like value found in neither place.
    """
    from lightkit.models.encoder import _WEIGHT_SUFFIXES
    from lightkit.models.weights import PretrainedWeightsError

    model = cfg.get("model")
    init = model.get("init_args") if hasattr(model, "get") else None
    value = init.get("pretrained") if init is not None else None
    config_dirs = [Path(str(c)).resolve().parent for c in (cfg.get("config") or []) if c]

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value.endswith(_WEIGHT_SUFFIXES) or Path(value).expanduser().is_absolute():
            return value
        for candidate in [d / value for d in config_dirs] + [Path.cwd() / value]:
            if candidate.is_file():
                return str(candidate)
        where = ", ".join(map(str, config_dirs)) or "none given"
        raise PretrainedWeightsError(
            f"pretrained={value!r}: no such file next to the config ({where}) "
            f"or in the working directory {Path.cwd()}; give an absolute path, or lightkit:<name> for packaged weights."
        )

    if isinstance(value, dict):
        init["pretrained"] = {key: resolve(choice) for key, choice in value.items()}
    elif value is not None:
        init["pretrained"] = resolve(value)


def _after_fit_checks(trainer: Trainer, datamodule: Any, results: dict[str, float], test_counts: list[int] | None,
                      baseline: bool, measured: Any = None) -> dict[str, Any]:
    """Verdicts (train longer, one class) and the pixel baseline (``measured``: already fitted by
    ``--sanity_first`` on the same split), each printed as one line."""
    from lightning.pytorch.utilities import rank_zero_warn

    extra: dict[str, Any] = {"verdicts": []}
    budget = next((cb for cb in trainer.callbacks if isinstance(cb, TrainingBudget)), None)
    if budget is not None:
        extra["verdicts"] = budget.verdicts(test_counts)
    if baseline and datamodule is not None and "test/acc" in results:
        from lightkit.baseline import below_baseline_message, pixel_baseline

        try:
            result = measured if measured is not None else pixel_baseline(datamodule)
        except ValueError as err:
            rank_zero_warn(f"lightkit: no pixel baseline: {err}")
        else:
            extra["pixel_baseline"] = result
            model_acc = results.get("ensemble/test_acc", results["test/acc"])  # what the user gets: the ensemble's
            message = below_baseline_message(model_acc, result, trainer.global_step)
            if message:
                extra["verdicts"].append(message.removeprefix("lightkit: "))
    for line in extra["verdicts"]:
        rank_zero_warn(f"lightkit: {line}")
    return extra


def _print_summary(trainer: Trainer, results: dict[str, float], fit_s: float, total_s: float, ckpt: str,
                   log_dir: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    extra = extra or {}
    summary: dict[str, Any] = {k: v for k, v in results.items()}
    table = Table(title="lightkit run summary", show_header=False)
    first = " (model 1)" if extra.get("ensemble") is not None else ""  # an ensemble, scored or not
    for key in ("test/acc", "test/acc_top5", "test/f1", "test/loss", "tta/test_acc", "tta/test_nll",
                "snapshot/test_ensemble_acc", "snapshot/test_ensemble_nll", "ensemble/test_acc", "ensemble/test_nll"):
        if key in results:
            value = results[key]
            shown = f"{100 * value:.2f} %" if "acc" in key or key.endswith("f1") else f"{value:.4f}"
            table.add_row(key + (first if key.startswith("test/") else ""), shown)
    ensemble = extra.get("ensemble")
    if ensemble is not None:
        accs = [m["acc"] for m in ensemble.member_metrics]
        if accs:
            table.add_row(f"test/acc of each of the {len(accs)} models", " / ".join(f"{100 * a:.2f} %" for a in accs))
        table.add_row("ensemble checkpoints", "\n".join(ensemble.ckpt_paths))
        summary["ensemble/members"] = list(ensemble.ckpt_paths)
        summary["ensemble/member_test_acc"] = accs
    baseline = extra.get("pixel_baseline")
    if baseline is not None:
        subset = f", {baseline.n_test} of {baseline.n_test_total} test images" if baseline.n_test_total else ""
        subset += f", {baseline.skipped} unreadable files left out" if baseline.skipped else ""
        table.add_row(f"pixel baseline (logistic regression, {baseline.size}x{baseline.size}{subset})",
                      f"{100 * baseline.test_acc:.2f} %")
        summary["baseline/pixel_logreg_acc"] = baseline.test_acc
        summary["baseline/pixel_logreg_test_images"] = baseline.n_test  # at most max_eval of a large test split
        summary["baseline/pixel_logreg_seconds"] = baseline.seconds
    # With an ensemble the trainer is model 1's; the total also holds the other models' fits.
    table.add_row(f"epochs / optimizer steps{first}", f"{trainer.current_epoch} / {trainer.global_step}")
    table.add_row(f"fit time{first}", f"{fit_s:.1f} s")
    table.add_row("total time (all fits + test)" if first else "total time (fit + test)", f"{total_s:.1f} s")
    table.add_row(f"checkpoint tested{first}", ckpt or "(none saved: the last weights)")
    files = _checkpoint_files(trainer)
    if files:
        table.add_row(f"checkpoint files{first}", "\n".join(files))
    wandb_dir = _wandb_dir(trainer)
    if wandb_dir:
        table.add_row("W&B run", wandb_dir)
    if log_dir:
        table.add_row("run folder", str(log_dir))
    for line in extra.get("verdicts", []):
        table.add_row("[bold]note[/bold]", line)
    Console(width=120).print(table)
    summary.update({"epochs": trainer.current_epoch, "steps": trainer.global_step, "fit_seconds": fit_s,
                    "checkpoint": ckpt or None, "log_dir": str(log_dir) if log_dir else None,
                    "checkpoint_files": _checkpoint_files(trainer),
                    "verdicts": list(extra.get("verdicts", []))})
    return summary


def main(args: list[str] | None = None, run: bool = True, edge: bool | None = None) -> LightkitCLI | None:
    """Entry point of ``lightkit`` and ``cli.py``: lightkit's own commands, else LightningCLI's.

    Args:
        args: the command line without the program name; None: ``sys.argv[1:]``.
        run: run the subcommand (False: parse and instantiate only, no subcommands).
        edge: behave as the command line: every error becomes one ``error:`` line on stderr and an
            exit code (:mod:`lightkit.edge`), the start-up noise is silenced, and each command writes
            into its own run folder (``--run_dir auto``). Default: True when ``args`` is None.
    """
    argv = sys.argv[1:] if args is None else list(args)
    edge = args is None if edge is None else edge
    if not edge:
        return _main(argv, run)

    def command() -> LightkitCLI | None:
        if run:
            check_argv(argv)
        wants_dir = run and not any(a == "--run_dir" or a.startswith("--run_dir=") for a in argv)
        auto = ["--run_dir=auto"] if wants_dir and argv and argv[0] not in ("search", "export") else []
        return _main([*argv, *auto], run)

    return run_at_edge(command)


def _main(argv: list[str], run: bool) -> LightkitCLI | None:
    if argv and argv[0] in COMMANDS:
        code = command_module(argv[0]).run(argv[1:])
        if code:
            raise SystemExit(code)
        return None
    return LightkitCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # Optimizer and scheduler are the model's arguments (it builds the parameter groups); the
        # CLI's top-level ones would patch configure_optimizers and are lost under ddp_spawn.
        auto_configure_optimizers=False,
        args=argv,
        run=run,
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
