"""Shards for many GPUs and nodes: an image folder or CSV converted once with LitData, read by a data module.

``prepare_shards`` takes a file data module (folder or CSV), applies its split, few-shot and
unreadable-image rules once, and writes ``train/``, ``val/`` and ``test/`` with ``litdata.optimize``
(Lightning's LitData: chunked binary files plus an index), each sample the image file's own encoded
bytes, its label and its name. ``lightkit.json`` next to them keeps the class names, channels,
flips, native size and the preprocessing the user gave, so the shards train like the folder did.

:class:`ShardDataModule` reads them with ``litdata.StreamingDataset`` / ``StreamingDataLoader``:
each rank and worker reads its own chunks (LitData's distributed sharding, ``drop_last`` under DDP so
that the ranks run equal numbers of steps), workers decode, resize, augment (seeded per sample by
``(seed, epoch, index)``) and normalise with the same functions as the folder modules, and the loader
is ``_Stateful``: a checkpoint saved mid-epoch resumes with the rest of that epoch.
"""

from __future__ import annotations

import io
import json
import os
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.data.base import resolve_preprocessing
from lightkit.data.errors import BadImageError, DataError
from lightkit.data.images import decode_image
from lightkit.data.stream import default_num_workers, preprocess_sample, skip_bad_collate

__all__ = ["META_FILE", "ShardDataModule", "prepare_shards"]

META_FILE = "lightkit.json"
_SPLITS = ("train", "val", "test")


def _check(path: str, channels: int) -> str | None:
    """``None`` when the file decodes, else the reason (run in a process pool)."""
    try:
        decode_image(path, channels)
    except BadImageError as err:
        return str(err.__cause__ or err)
    return None


def _sample(item: tuple[str, int, str]) -> dict[str, Any]:
    """One shard sample: the file's encoded bytes (decoded by the reading workers), label and name."""
    path, label, name = item
    return {"image": Path(path).read_bytes(), "label": int(label), "name": name}


def prepare_shards(datamodule: Any, output: str | Path, num_workers: int | None = None,
                   chunk_bytes: str = "64MB") -> dict[str, Any]:
    """Write a file data module's splits as LitData shards plus ``lightkit.json``; returns that metadata.

    Every image is decoded once to check it (``num_workers`` processes); unreadable ones follow the
    data module's ``on_bad_image`` (``error`` raises, ``skip`` leaves them out with a warning).

    Args:
        datamodule: an :class:`~lightkit.data.folder.ImageFolderDataModule` or
            :class:`~lightkit.data.folder.CSVDataModule` (anything with ``file_splits``).
        output: a new or empty folder.
        num_workers: processes that check and write; default from the CPU count.
        chunk_bytes: target size of a chunk file (LitData's ``chunk_bytes``).

    Raises:
        DataError: a data module without files, or an ``output`` folder that is not empty.
        BadImageError: an unreadable image with ``on_bad_image: error``.
    """
    from litdata import optimize

    owner = type(datamodule).__name__
    if not hasattr(datamodule, "file_splits"):
        raise DataError(f"prepare: {owner} has no image files to convert; use lightkit.data.ImageFolderDataModule "
                        f"or lightkit.data.CSVDataModule.")
    out = Path(output).expanduser()
    if out.exists() and any(out.iterdir()):
        raise DataError(f"prepare: output={str(out)!r} is not empty; give a new folder (shards are written once).")
    workers = num_workers if num_workers is not None else default_num_workers()
    splits = datamodule.file_splits()
    channels = datamodule.in_chans
    skipped: list[str] = []
    counts: dict[str, int] = {}
    with get_context("fork").Pool(max(1, workers)) as pool:
        for split, (paths, labels, names) in splits.items():
            reasons = pool.map(partial(_check, channels=channels), paths, chunksize=64) if paths else []
            bad = [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]
            if bad and datamodule.on_bad_image == "error":
                raise BadImageError(f"{owner} ({split}): unreadable image {bad[0][0]!r} ({bad[0][1]})"
                                    + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                                    + "; replace or delete it, or set on_bad_image: skip to leave such images out.")
            if bad:
                rank_zero_warn(f"{owner} ({split}): skipped {len(bad)} unreadable images: first {bad[0][0]!r} "
                               f"({bad[0][1]}).")
                skipped += [p for p, _ in bad]
            items = [(p, int(y), n) for p, y, n, r in zip(paths, labels, names, reasons, strict=True) if r is None]
            counts[split] = len(items)
            if items:
                optimize(fn=_sample, inputs=items, output_dir=str(out / split), chunk_bytes=chunk_bytes,
                         num_workers=min(max(1, workers), len(items)), verbose=False, start_method="fork")
    hparams = datamodule.hparams
    meta = {
        "format": 1,
        "data_module": f"{type(datamodule).__module__}.{owner}",
        "class_names": datamodule.class_names,
        "channels": channels,
        "flips": bool(datamodule.flips_preserve_label),
        "native_size": list(datamodule.native_size()),
        "image_size": hparams.get("image_size"),
        "mean": list(datamodule.mean) if datamodule.mean is not None else None,
        "std": list(datamodule.std) if datamodule.std is not None else None,
        "counts": counts,
        "skipped": skipped,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def read_meta(path: str | Path, owner: str = "ShardDataModule") -> dict[str, Any]:
    meta_file = Path(path).expanduser() / META_FILE
    if not meta_file.is_file():
        raise DataError(f"{owner}: path={str(path)!r} has no {META_FILE}; write shards with `python cli.py prepare "
                        f"--data.init_args.root <images> --output <shards>` and point path at that output.")
    return json.loads(meta_file.read_text())


def _shard_dataset_class() -> type:
    """``litdata.StreamingDataset`` that decodes and preprocesses each sample (imported on first use)."""
    from litdata import StreamingDataset
    from litdata.streaming.sampler import ChunkedIndex

    class ShardImageDataset(StreamingDataset):
        """Shard samples -> ``(x, label)``: decode the stored bytes, resize, augment, normalise."""

        def __init__(self, input_dir: str, preprocess: dict[str, Any], shuffle: bool, seed: int) -> None:
            super().__init__(input_dir=input_dir, shuffle=shuffle, seed=seed)
            self.preprocess = preprocess

        def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
            item = super().__getitem__(index)
            p = self.preprocess
            number = index.index if isinstance(index, ChunkedIndex) else int(index)
            try:
                image = decode_image(io.BytesIO(item["image"]), p["channels"])  # type: ignore[arg-type]
            except BadImageError as err:
                if p["on_bad_image"] == "error":
                    raise BadImageError(f"unreadable image {item['name']!r} in the shards at {self.input_dir.path!r}: "
                                        f"{err.__cause__ or err}; re-run prepare on fixed files, or set "
                                        f"on_bad_image: skip to leave such images out.") from err
                return None
            key = (p["seed"], int(self.current_epoch), number) if p["transform"] is not None else None
            x = preprocess_sample(image, p["size"], p["interpolation"], p["mean"], p["std"], p["transform"], key)
            return x, torch.tensor(item["label"], dtype=torch.long)

    return ShardImageDataset


class ShardDataModule(LightningDataModule):
    """Image classification from shards written by ``python cli.py prepare`` (LitData), for many GPUs and nodes.

    Class names, channels, flips and the preprocessing the folder data module was given come from
    ``lightkit.json``; ``image_size``, ``mean`` and ``std`` given here win, then the attached model's
    pretrained ``data_config``, then the stored values (the native size and 0.5 when none was set).

    Args:
        path: the folder ``prepare`` wrote (``train/``, ``val/``, ``test/``, ``lightkit.json``).
        batch_size: images per batch and rank.
        num_workers: loader workers per rank; default: the node's CPUs shared by its ranks, minus one.
        seed: shuffling and augmentation seed; default the run's global seed, else 0.
        image_size: side of the square model input in pixels.
        mean: per-channel normalisation mean (0..1 scale).
        std: per-channel normalisation std (0..1 scale).
        augmentations: train augmentations, as for the folder data modules.
        fill: fill mode of spatial augmentations.
        on_bad_image: a sample whose bytes do not decode: ``error`` stops, ``skip`` drops it from its batch.
        pin_memory: DataLoader ``pin_memory``; default on with CUDA.
        persistent_workers: keep workers between epochs.

    Raises:
        DataError: no ``lightkit.json`` or no ``train/`` under ``path``, a bad value.
    """

    def __init__(
        self,
        path: str,
        batch_size: int = 64,
        num_workers: int | None = None,
        seed: int | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augmentations: str | list[dict[str, Any]] | None = None,
        fill: str = "constant",
        on_bad_image: Literal["error", "skip"] = "error",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if batch_size < 1:
            raise DataError(f"{owner}: batch_size={batch_size} must be >= 1.")
        if num_workers is not None and num_workers < 0:
            raise DataError(f"{owner}: num_workers={num_workers} must be >= 0, or null to choose from the CPU count.")
        if on_bad_image not in ("error", "skip"):
            raise DataError(f"{owner}: on_bad_image={on_bad_image!r}; use 'error' or 'skip'.")
        if image_size is not None and image_size < 1:
            raise DataError(f"{owner}: image_size={image_size} must be a positive number of pixels, or null.")
        self.meta = read_meta(path, owner)
        if not (Path(path).expanduser() / "train").is_dir():
            raise DataError(f"{owner}: path={path!r} has no train/ shards; re-run prepare.")
        self.path = str(Path(path).expanduser())
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = int(seed) if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.image_size = image_size
        self.mean = mean
        self.std = std
        self.augmentations = augmentations
        self.fill = fill
        self.on_bad_image = on_bad_image
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        if augmentations is not None:
            from lightkit.data.augment import build_augmentations

            build_augmentations(augmentations, image_size or 32, fill, self.meta["flips"], where=owner)
        self.save_hyperparameters()
        self.preprocessing: dict[str, Any] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def in_chans(self) -> int:
        return int(self.meta["channels"])

    def split_sizes(self) -> dict[str, int]:
        return {s: int(self.meta["counts"].get(s, 0)) for s in _SPLITS}

    def setup(self, stage: str) -> None:
        """Resolve the preprocessing (given > model > stored) and check the attached model."""
        module = None
        if self.trainer is not None:
            try:
                module = self.trainer.lightning_module
            except (AttributeError, RuntimeError):
                module = None
        stored = self.meta  # what the folder data module was given at prepare time counts as given here
        mean = self._channel_values(self.mean, "mean") or (tuple(stored["mean"]) if stored.get("mean") else None)
        std = self._channel_values(self.std, "std") or (tuple(stored["std"]) if stored.get("std") else None)
        self.preprocessing = resolve_preprocessing(
            type(self).__name__, module, self.in_chans, self.class_names,
            self.image_size if self.image_size is not None else stored.get("image_size"), mean, std,
            lambda: (int(stored["native_size"][0]), int(stored["native_size"][1])),
        )

    def _channel_values(self, values: list[float] | None, key: str) -> tuple[float, ...] | None:
        if values is None:
            return None
        if len(values) not in (1, self.in_chans):
            raise DataError(f"{type(self).__name__}: {key}={values} has {len(values)} values for {self.in_chans} "
                            f"channels; give one value or {self.in_chans}.")
        return tuple(float(v) for v in values) * (self.in_chans if len(values) == 1 else 1)

    def _dataset(self, split: str, train: bool) -> Any:
        if not self.preprocessing:
            self.setup("fit")
        folder = Path(self.path) / split
        if not folder.is_dir():
            raise DataError(f"{type(self).__name__}: there are no {split} shards in {self.path!r} (the data module "
                            f"given to prepare had no {split} images); prepare with a {split} fraction > 0.")
        _, height, width = self.preprocessing["input_size"]
        transform = None
        if train and self.augmentations is not None:
            from lightkit.data.augment import build_augmentations

            transform = build_augmentations(self.augmentations, height, self.fill, self.meta["flips"],
                                            where=type(self).__name__)
        preprocess = {
            "channels": self.in_chans, "size": (height, width), "interpolation": self.preprocessing["interpolation"],
            "mean": torch.tensor(self.preprocessing["mean"], dtype=torch.float32).view(-1, 1, 1),
            "std": torch.tensor(self.preprocessing["std"], dtype=torch.float32).view(-1, 1, 1),
            "transform": transform, "seed": self.seed, "on_bad_image": self.on_bad_image,
        }
        return _shard_dataset_class()(str(folder), preprocess, shuffle=train, seed=self.seed)

    def _loader(self, split: str, train: bool) -> Any:
        from litdata import StreamingDataLoader

        trainer = self.trainer
        local = int(getattr(trainer, "num_devices", 1) or 1) if trainer is not None else 1
        workers = self.num_workers if self.num_workers is not None else default_num_workers(local)
        pin = self.pin_memory
        if pin is None:
            from lightning.pytorch.accelerators import CUDAAccelerator

            pin = isinstance(getattr(trainer, "accelerator", None), CUDAAccelerator)
        return StreamingDataLoader(self._dataset(split, train), batch_size=self.batch_size, num_workers=workers,
                                   collate_fn=skip_bad_collate, pin_memory=pin,
                                   persistent_workers=self.persistent_workers and workers > 0)

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", train=False)


def log_prepared(meta: dict[str, Any], output: str | Path) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    rank_zero_info(f"prepare: wrote {counts} images of {len(meta['class_names'])} classes to {output} "
                   f"(+ {META_FILE}); train on them with data: class_path lightkit.data.ShardDataModule, "
                   f"init_args: {{path: {output}}}.")

