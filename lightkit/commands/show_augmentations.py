"""``python cli.py show_augmentations --config X.yaml``: look at the training augmentation before fitting.

Builds the model and data from the config exactly as ``fit`` would (so the images are at the model's
input size, after the data module's resize), takes ``samples`` training images of different classes
and writes a PNG grid: one row per image, the original then ``views`` augmented draws of the
configured pipeline (``data.init_args.augmentations`` and ``fill``). With ``fill_modes: true`` each
image gets one row per fill mode (constant, edge, reflect, symmetric, wrap) with the same random
draws, so the rows differ only in what fills the area a rotation or shift uncovers. When the config
has a W&B logger the grid is logged there too (key ``augmentations``; offline runs keep it on disk).
Options live in the config's ``show_augmentations:`` section or on the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["add_arguments", "run"]


def add_arguments(parser: LightningArgumentParser) -> None:
    add = parser.add_argument
    add("--show_augmentations.output", type=str | None, default=None,
        help="PNG written by `show_augmentations`; null: <run folder>/augmentations.png.")
    add("--show_augmentations.samples", type=int, default=4, help="Training images (rows), of different classes.")
    add("--show_augmentations.views", type=int, default=6, help="Augmented draws per row, after the original.")
    add("--show_augmentations.fill_modes", type=bool, default=False,
        help="One row per fill mode (constant, edge, reflect, symmetric, wrap) for each image, same draws.")
    add("--show_augmentations.cell", type=int, default=64, help="Pixels per image in the grid (nearest upscale).")
    add("--show_augmentations.seed", type=int, default=0, help="Seed of the image choice and of the draws.")


class _Refusal(ValueError):
    """A bad option or config: printed as one line, exit code 2."""


_LIMITS = {"samples": (1, 4), "views": (1, 6), "cell": (8, 64)}  # option -> (minimum, default)


def _validate(opts: Any) -> None:
    for key, (low, default) in _LIMITS.items():
        if getattr(opts, key) < low:
            raise _Refusal(f"show_augmentations: {key}={getattr(opts, key)} must be >= {low}; "
                           f"set --show_augmentations.{key} (default {default}).")


def _choose(labels: np.ndarray, samples: int, seed: int) -> list[int]:
    """``samples`` indices, one class after another (distinct classes first), in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen: list[int] = []
    seen: set[int] = set()
    for idx in order:  # first pass: one per class
        if int(labels[idx]) not in seen:
            seen.add(int(labels[idx]))
            chosen.append(int(idx))
    taken = set(chosen)
    return (chosen + [int(i) for i in order if int(i) not in taken])[:samples]


def _train_images(model: Any, datamodule: Any) -> Any:
    """The data module's augmented train dataset, set up as ``fit`` would with this model."""
    # As in `sanity`: the data module reads the model's preprocessing through `trainer.lightning_module`.
    datamodule.trainer = SimpleNamespace(lightning_module=model)
    try:
        datamodule.setup("fit")
        return datamodule.train_dataloader().dataset
    finally:
        datamodule.trainer = None


def _log_to_wandb(trainer: Any, path: Path, caption: str) -> list[str]:
    from lightning.pytorch.loggers import WandbLogger

    logged = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="augmentations", images=[str(path)], caption=[caption])
            logged.append(str(Path(logger.experiment.dir).parent))
            logger.experiment.finish()
    return logged


def run(argv: list[str]) -> int:
    from lightkit.cli import LightkitCLI
    from lightkit.data.augment import FILL_MODES, build_augmentations
    from lightkit.data.preview import augmentation_grid, save_png

    cli = LightkitCLI(args=argv, run=False)
    opts = cli.config.show_augmentations
    datamodule, trainer = cli.datamodule, cli.trainer
    name = type(datamodule).__name__
    try:
        _validate(opts)
        spec = getattr(datamodule, "augmentations", None)
        if spec is None or spec == "none":
            raise _Refusal(f"show_augmentations: {name} has augmentations={spec!r}, nothing to show; set "
                           f"data.init_args.augmentations to a preset (light, standard, strong) or a list.")
        dataset = _train_images(cli.model, datamodule)
        if not all(hasattr(dataset, key) for key in ("images", "labels", "transform")):
            raise _Refusal(f"show_augmentations: {name}'s train set is a {type(dataset).__name__} without "
                           f"images/labels/transform; use a lightkit image data module (BaseImageDataModule).")
    except _Refusal as err:
        print(err, file=sys.stderr)
        return 2
    labels = np.asarray(dataset.labels)
    chosen = _choose(labels, opts.samples, opts.seed)
    images = [dataset.images[i] for i in chosen]
    classes = list(getattr(datamodule, "class_names", []) or [])
    names = [classes[int(labels[i])] if int(labels[i]) < len(classes) else str(int(labels[i])) for i in chosen]
    size = int(images[0].shape[0])
    if opts.fill_modes:
        fills = list(FILL_MODES)
        pipelines = [build_augmentations(spec, size, fill, datamodule.flips_preserve_label, where=name)
                     for fill in fills]
        row_labels = [f"{n} {fill}" for n in names for fill in fills]
    else:
        pipelines, row_labels = [dataset.transform], [f"class {n}" for n in names]
    grid = augmentation_grid(images, pipelines, views=opts.views, seed=opts.seed, cell=opts.cell,
                             row_labels=row_labels)
    out = Path(opts.output) if opts.output else Path(trainer.log_dir or trainer.default_root_dir) / "augmentations.png"
    save_png(grid, out)
    rows = len(row_labels)
    caption = (f"{spec if isinstance(spec, str) else 'custom list'}, "
               f"fill {'all modes' if opts.fill_modes else datamodule.fill}")
    wandb_runs = _log_to_wandb(trainer, out, caption)
    print(f"lightkit show_augmentations: {rows} rows x {opts.views + 1} columns ({caption}) -> {out}"
          + (f"; logged to W&B run {', '.join(wandb_runs)}" if wandb_runs else ""))
    return 0
