"""``python cli.py sanity --config X.yaml``: the lecture's strategy steps 1-3 as a pass/fail report before fitting.

Builds the model and data from the config exactly as ``fit`` would, then runs
:func:`lightkit.sanity.run_sanity` (initial loss vs ln(C), gradients reach every trainable layer,
overfit a small sample with regularisation and augmentation off, a short LR check). Prints a table,
writes ``sanity.json`` to the run folder (``--run_dir``, else ``trainer.default_root_dir``; no W&B run)
and exits non-zero when a check fails. Options live in the config's ``sanity:`` section or on the
command line (``--sanity.overfit_steps 200``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["add_arguments", "check", "run"]


def add_arguments(parser: LightningArgumentParser) -> None:
    from lightkit.sanity import CheckName

    add = parser.add_argument
    add("--sanity.checks", type=list[CheckName], default=["initial_loss", "gradients", "overfit", "lr"],
        help="Checks run by `sanity`.")
    add("--sanity.overfit_batches", type=int, default=2, help="Batches in the sample to overfit.")
    add("--sanity.batch_size", type=int | None, default=16,
        help="Images per sample batch; null: the data module's batch_size.")
    add("--sanity.overfit_steps", type=int, default=100, help="Maximum optimizer steps to overfit the sample.")
    add("--sanity.overfit_accuracy", type=float, default=0.99, help="Training accuracy that counts as overfitted.")
    add("--sanity.loss_tolerance", type=float, default=0.25,
        help="Allowed deviation of the initial loss from ln(C), as a fraction of ln(C).")
    add("--sanity.lr", type=float | None, default=None, help="Base LR of the checks; null: the configured optimizer's.")
    add("--sanity.lr_factors", type=list[float], default=[0.1, 1.0, 10.0],
        help="LR multipliers of the LR check (must include 1.0).")
    add("--sanity.lr_steps", type=int, default=100, help="Optimizer steps per LR in the LR check.")
    add("--sanity.min_decrease", type=float, default=0.05,
        help="Fraction the smoothed loss must fall in the LR check.")
    add("--sanity.pixel_baseline", type=bool, default=True,
        help="Also fit logistic regression on the raw downsampled pixels (a few seconds) and report its test "
             "accuracy: the floor the network must beat.")
    add("--sanity.seed", type=int, default=0, help="Seed of every check.")
    add("--sanity.output", type=str | None, default=None,
        help="JSON report path; null: <run folder>/sanity.json.")


def _validate(opts: Any) -> None:
    if opts.overfit_batches < 1:
        raise ValueError(f"sanity: overfit_batches={opts.overfit_batches} must be >= 1 (2 is the default).")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise ValueError(f"sanity: batch_size={opts.batch_size} must be >= 1, or null for the data module's.")


@contextmanager
def _train_batches(model: LightningModule, datamodule: LightningDataModule) -> Iterator[Any]:
    """The train loader of ``datamodule`` with augmentation off and the model's preprocessing; on exit
    the data module's augmentation is back and its unaugmented train split dropped (a ``fit`` that
    follows in the same process rebuilds it augmented)."""
    augmentations = getattr(datamodule, "augmentations", None)
    if hasattr(datamodule, "augmentations"):
        # The checks measure the model and the optimiser, not the augmentation (Karpathy: "turn off
        # regularisation"); the data module builds its train split from this attribute in setup.
        datamodule.augmentations = None
    # BaseImageDataModule reads the attached module's preprocessing (data_config) and checks its
    # num_classes through `trainer.lightning_module`, as in fit; give it just that, no Trainer run.
    datamodule.trainer = SimpleNamespace(lightning_module=model)  # type: ignore[assignment]
    try:
        datamodule.setup("fit")
        yield datamodule.train_dataloader()
    finally:
        datamodule.trainer = None
        if hasattr(datamodule, "augmentations"):
            datamodule.augmentations = augmentations
            built = getattr(datamodule, "_datasets", None)
            if augmentations is not None and isinstance(built, dict):
                built.pop("train", None)


def _table(report: Any) -> Any:
    from rich.table import Table

    table = Table(title="lightkit sanity", show_lines=True)
    for column in ("check", "result", "measured", "hint"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.message, check.hint)
    return table


def _baseline_check(datamodule: Any) -> tuple[Any, Any]:
    """The pixel baseline as an informational row (it never fails the report), and its result (None
    when it could not be measured)."""
    from lightkit.baseline import pixel_baseline
    from lightkit.sanity import CheckResult

    try:
        result = pixel_baseline(datamodule)
    except ValueError as err:
        return CheckResult("pixel_baseline", True, f"not measured: {err}"), None
    row = CheckResult(
        "pixel_baseline", True,
        f"logistic regression on {result.size}x{result.size} pixels: {100 * result.test_acc:.2f} % test accuracy "
        f"({result.n_train} train images, {result.seconds:.1f} s): the floor the trained network must beat",
        measured={"test_acc": result.test_acc, "size": result.size, "n_train": result.n_train,
                  "seconds": result.seconds},
    )
    return row, result


def check(opts: Any, model: LightningModule, datamodule: LightningDataModule, device: Any, out: Path,
          write: bool = True) -> tuple[Any, Any]:
    """Run the configured checks (``opts``: the config's ``sanity:`` section) on ``model`` and
    ``datamodule``, print the table and write ``out`` (when ``write``: rank zero). Returns the
    report and the pixel baseline's result (None when not measured). ``model`` and the data module's
    augmentation are left as they were."""
    from rich.console import Console

    from lightkit.sanity import run_sanity, sample_batches

    _validate(opts)
    start = time.perf_counter()
    with _train_batches(model, datamodule) as loader:
        sample = sample_batches(loader, opts.overfit_batches, opts.batch_size)
        report = run_sanity(
            model, sample, loader, checks=list(opts.checks), lr=opts.lr, loss_tolerance=opts.loss_tolerance,
            overfit_steps=opts.overfit_steps, overfit_accuracy=opts.overfit_accuracy,
            lr_factors=list(opts.lr_factors), lr_steps=opts.lr_steps, min_decrease=opts.min_decrease,
            seed=opts.seed, device=device,
        )
    baseline = None
    if opts.pixel_baseline and hasattr(datamodule, "_get_splits"):
        row, baseline = _baseline_check(datamodule)
        report.checks.append(row)
    report.seconds = time.perf_counter() - start
    if write:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2, default=float))
        Console(width=140).print(_table(report))
    return report, baseline


def run(argv: list[str]) -> int:
    from lightkit.cli import LightkitCLI

    cli = LightkitCLI(args=argv, run=False)
    opts, trainer = cli.config.sanity, cli.trainer
    # The run folder, not trainer.log_dir: asking a WandbLogger for its folder starts a W&B run (1.7 s of a
    # 16 s command) that would hold nothing; the report goes to sanity.json and the terminal.
    out = Path(opts.output) if opts.output else Path(cli.run_dir or trainer.default_root_dir) / "sanity.json"
    report, _ = check(opts, cli.model, cli.datamodule, trainer.strategy.root_device, out)
    verdict = "all checks passed" if report.passed else f"{len(report.failed())} check(s) failed"
    print(f"lightkit sanity: {verdict} -> {out}", file=sys.stdout if report.passed else sys.stderr)
    return 0 if report.passed else 1
