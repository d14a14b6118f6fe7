"""``python cli.py plot_schedule --config X.yaml``: draw the configured LR schedule before training.

Builds the model, data and trainer from the config exactly as ``fit`` would, asks the model for its
optimizer and scheduler, and steps a copy through the whole run: LR per parameter group and
momentum per optimizer step, to ``<output>`` (default ``schedule.png``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["add_arguments", "run"]


def add_arguments(parser: LightningArgumentParser) -> None:
    parser.add_argument("--plot_schedule.output", type=str, default="schedule.png",
                        help="PNG written by `plot_schedule`.")
    parser.add_argument("--plot_schedule.log_lr", type=bool, default=False, help="Logarithmic LR axis.")


def step_counts(trainer: Trainer, datamodule: LightningDataModule) -> SimpleNamespace:
    """Optimizer steps per epoch and in total, as ``fit`` would count them, without fitting."""
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, float):
        batches = int(batches * limit)
    elif limit is not None:
        batches = min(batches, int(limit))
    accumulate = max(trainer.accumulate_grad_batches, 1)
    per_epoch = max(math.ceil(batches / accumulate), 1)
    if trainer.max_steps and trainer.max_steps > 0:
        total = trainer.max_steps
    else:
        total = per_epoch * max(int(trainer.max_epochs or 1), 1)
    return SimpleNamespace(estimated_stepping_batches=total, num_training_batches=per_epoch,
                           accumulate_grad_batches=1, max_epochs=trainer.max_epochs)


def run(argv: list[str]) -> int:
    from lightkit.cli import LightkitCLI
    from lightkit.plotting import plot_schedule

    cli = LightkitCLI(args=argv, run=False)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    counts = step_counts(trainer, datamodule)
    total, per_epoch = counts.estimated_stepping_batches, counts.num_training_batches
    # configure_optimizers reads the step counts from `model.trainer`; give it just those figures.
    model.trainer = counts  # type: ignore[assignment]
    try:
        conf = model.configure_optimizers()
    finally:
        model.trainer = None
    if not isinstance(conf, dict) or "lr_scheduler" not in conf:
        print("plot_schedule: the model has no lr_scheduler configured; the LR is constant.", file=sys.stderr)
        return 2
    out = Path(cli.config.plot_schedule.output)
    plot_schedule(conf["lr_scheduler"]["scheduler"], total, out, steps_per_epoch=per_epoch,
                  log_lr=cli.config.plot_schedule.log_lr)
    print(f"lightkit: schedule of {total} optimizer steps -> {out}")
    return 0
