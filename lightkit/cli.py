"""``lightkit`` command line: LightningCLI with lightkit's links, defaults and a run summary.

    python cli.py fit --config configs/quickstart.yaml
    python cli.py test --config configs/quickstart.yaml --ckpt_path runs/.../best.ckpt
    python cli.py predict --config configs/quickstart.yaml --ckpt_path ... --data.init_args.predict_path imgs/
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

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
from lightkit.commands import COMMANDS, command_module, config_commands  # noqa: E402
from lightkit.ensemble import EnsembleResult, ensemble_predict  # noqa: E402

__all__ = ["LightkitCLI", "main"]


class LightkitCLI(LightningCLI):
    """LightningCLI with the data module's ``num_classes``, ``in_chans`` and ``class_names`` linked
    into the model (one source of truth), an optional test of the best checkpoint after ``fit``, a
    summary table, and a prediction CSV writer on ``predict``."""

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
            "--summary_json", type=str | None, default=None,
            help="After fit, also write the summary table (test metrics, steps, baseline, verdicts) to this JSON file.",
        )
        parser.add_argument(
            "--ensemble_ckpts", type=list[str] | None, default=None,
            help="predict / test: average the softmax of these checkpoints (independent runs or snapshots), "
                 "loaded one at a time; prints each member and the ensemble, writes a CSV in the log dir.",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.init_args.in_chans", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    # -- instantiation -----------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        _resolve_pretrained_path(cfg)

    # -- fit ---------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self._t0 = time.perf_counter()
        from lightkit.callbacks.regularization import RegularizationSummary

        if not any(isinstance(cb, RegularizationSummary) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(RegularizationSummary())  # one log line: which regularizers are on
        if not any(isinstance(cb, TrainingBudget) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(TrainingBudget())  # counts the steps; warns when far too few

    def after_fit(self) -> None:
        fit_seconds = time.perf_counter() - self._t0
        cfg = self.config[self.subcommand]
        trainer = self.trainer
        if trainer.interrupted:
            return
        results: dict[str, float] = {}
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.get("test_after_fit", True) and self.datamodule is not None and _has_test(self.datamodule):
            out = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt or None, verbose=False)
            results = {k: float(v) for k, v in (out[0] if out else {}).items()}
        log_dir = trainer.log_dir  # a broadcast from rank zero under DDP: every rank must call it
        counts = self.model.prediction_counts("test") if results and hasattr(self.model, "prediction_counts") else None
        if trainer.is_global_zero:
            extra = _after_fit_checks(trainer, self.datamodule, results, counts, bool(cfg.get("pixel_baseline")))
            summary = _print_summary(trainer, results, fit_seconds, time.perf_counter() - self._t0, ckpt, log_dir, extra)
            if cfg.get("summary_json"):
                path = Path(cfg["summary_json"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(summary, indent=2))
            _finish_wandb(trainer)

    # -- checkpoints -------------------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Lightning re-parses the model from ``--ckpt_path``'s hyperparameters. A checkpoint saved
        outside a subclass-mode CLI has no ``_class_path``; the config's model then stands as given."""
        if self.config.get("subcommand"):
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
            if ckpt_path and Path(ckpt_path).is_file():
                hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True).get("hyper_parameters", {})
                if "_class_path" not in hparams:
                    return
        super()._parse_ckpt_path()

    # -- predict / test ----------------------------------------------------------------------
    def before_predict(self) -> None:
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
            return self._ensemble(list(ckpts), model, datamodule, "ensemble_test.csv")
        return self.trainer.test(model, datamodule=datamodule, **kwargs)

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



def _finish_wandb(trainer: Trainer) -> None:
    """Close the W&B run so its offline files are complete (and `wandb sync`-able) when fit returns."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # noqa: SLF001 - no public "is started"
            logger.experiment.finish()


def _has_test(datamodule: LightningDataModule) -> bool:
    return type(datamodule).test_dataloader is not LightningDataModule.test_dataloader


def _wandb_dir(trainer: Trainer) -> str | None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            return getattr(run, "dir", None) and str(Path(run.dir).parent)
    return None


def _resolve_pretrained_path(cfg: Any) -> None:
    """A relative ``model.init_args.pretrained`` path is looked up next to the config file(s) first,
    then in the working directory, and replaced by the absolute path found.

    Raises:
        PretrainedWeightsError: a path-like value found in neither place.
    """
    from lightkit.models.encoder import _WEIGHT_SUFFIXES
    from lightkit.models.weights import PretrainedWeightsError

    model = cfg.get("model")
    init = model.get("init_args") if hasattr(model, "get") else None
    value = init.get("pretrained") if init is not None else None
    if not isinstance(value, str) or not value.endswith(_WEIGHT_SUFFIXES) or Path(value).expanduser().is_absolute():
        return
    config_dirs = [Path(str(c)).resolve().parent for c in (cfg.get("config") or []) if c]
    candidates = [d / value for d in config_dirs] + [Path.cwd() / value]
    for candidate in candidates:
        if candidate.is_file():
            init["pretrained"] = str(candidate)
            return
    raise PretrainedWeightsError(
        f"pretrained={value!r}: no such file next to the config ({', '.join(map(str, config_dirs)) or 'none given'}) "
        f"or in the working directory {Path.cwd()}; give an absolute path, or lightkit:<name> for packaged weights."
    )


def _after_fit_checks(trainer: Trainer, datamodule: Any, results: dict[str, float], test_counts: list[int] | None,
                      baseline: bool) -> dict[str, Any]:
    """Verdicts (train longer, one class) and the pixel baseline, each printed as one line."""
    from lightning.pytorch.utilities import rank_zero_warn

    extra: dict[str, Any] = {"verdicts": []}
    budget = next((cb for cb in trainer.callbacks if isinstance(cb, TrainingBudget)), None)
    if budget is not None:
        extra["verdicts"] = budget.verdicts(test_counts)
    if baseline and datamodule is not None and "test/acc" in results:
        from lightkit.baseline import below_baseline_message, pixel_baseline

        try:
            result = pixel_baseline(datamodule)
        except ValueError as err:
            rank_zero_warn(f"lightkit: no pixel baseline: {err}")
        else:
            extra["pixel_baseline"] = result
            message = below_baseline_message(results["test/acc"], result, trainer.global_step)
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
    for key in ("test/acc", "test/acc_top5", "test/f1", "test/loss", "tta/test_acc", "tta/test_nll",
                "snapshot/test_ensemble_acc", "snapshot/test_ensemble_nll"):
        if key in results:
            value = results[key]
            table.add_row(key, f"{100 * value:.2f} %" if "acc" in key or key.endswith("f1") else f"{value:.4f}")
    baseline = extra.get("pixel_baseline")
    if baseline is not None:
        table.add_row(f"pixel baseline (logistic regression, {baseline.size}x{baseline.size})",
                      f"{100 * baseline.test_acc:.2f} %")
        summary["baseline/pixel_logreg_acc"] = baseline.test_acc
    table.add_row("epochs / optimizer steps", f"{trainer.current_epoch} / {trainer.global_step}")
    table.add_row("fit time", f"{fit_s:.1f} s")
    table.add_row("total time (fit + test)", f"{total_s:.1f} s")
    table.add_row("checkpoint", ckpt or "(none saved)")
    wandb_dir = _wandb_dir(trainer)
    if wandb_dir:
        table.add_row("W&B run", wandb_dir)
    if log_dir:
        table.add_row("log dir", str(log_dir))
    for line in extra.get("verdicts", []):
        table.add_row("[bold]note[/bold]", line)
    Console(width=120).print(table)
    summary.update({"epochs": trainer.current_epoch, "steps": trainer.global_step, "fit_seconds": fit_s,
                    "checkpoint": ckpt or None, "log_dir": str(log_dir) if log_dir else None,
                    "verdicts": list(extra.get("verdicts", []))})
    return summary


def main(args: list[str] | None = None, run: bool = True) -> LightkitCLI | None:
    """Entry point of ``lightkit`` and ``cli.py``: lightkit's own commands, else LightningCLI's."""
    argv = sys.argv[1:] if args is None else list(args)
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
