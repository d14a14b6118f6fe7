"""``BaseImageDataModule``: stratified seeded splits, one-time decode/resize/normalise, predict sets.

A subclass only says where labelled images come from (:meth:`BaseImageDataModule._load_pools`)
and what its classes are. Everything else is shared, so the embedded sets, image folders and CSVs
behave the same way: the same split rule, the same preprocessing resolution, the same batches.

Speed: the images are decoded, resized and normalised once in ``setup`` and kept in memory (a second
``setup`` with the same preprocessing reuses them). Without augmentations a split is a
``TensorDataset`` of normalised ``float32`` images, and the data module's loaders read it through an
:class:`InMemoryTensorDataset` view: one ``__getitems__`` call per batch instead of one
``__getitem__`` per image plus the default collate; with augmentations the
train split keeps ``uint8`` HWC images and runs the albumentations pipeline per sample (give it
``num_workers``). ``pin_memory`` defaults to on exactly when the trainer runs on CUDA.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from lightkit.data.errors import DataError
from lightkit.data.images import AugmentedImageDataset, decode_images, list_images, normalize, resize_images
from lightkit.data.splits import few_shot_indices, stratified_split
from lightkit.data.stream import (
    LazyImages,
    ResumableLoader,
    ResumableSampler,
    StreamingImageDataset,
    default_num_workers,
    skip_bad_collate,
)

__all__ = [
    "BaseImageDataModule",
    "EpochSeededSampler",
    "ImagePool",
    "InMemoryTensorDataset",
    "check_num_classes",
    "resolve_preprocessing",
]

_WARN_BYTES = 4 * 2**30
_STAGES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


@dataclass
class ImagePool:
    """Labelled images of one source split (all images, or a ``train/`` / ``val/`` / ``test/`` folder).

    Attributes:
        images: ``uint8`` HWC images with the data module's ``in_chans`` channels: one NHWC array,
            a list when sizes differ, or :class:`~lightkit.data.stream.LazyImages` (files decoded when
            read: the streaming path).
        labels: class index per image (int64).
        names: an identifier per image (a file path); ``None`` names them ``"<split>/<index>"``.
    """

    images: np.ndarray | list[np.ndarray] | LazyImages
    labels: np.ndarray
    names: list[str] | None = None


class InMemoryTensorDataset(TensorDataset):
    """A ``TensorDataset`` that the DataLoader reads a batch at a time (one call, not one per sample).

    ``DataLoader`` calls ``__getitems__`` with a whole batch of indices when a dataset has it; the
    batch comes back as ``[x, y, ...]`` (the list a default collate gives, so callbacks that replace
    the batch in place still can) and :func:`batch_collate` passes it through, so a loader over this
    dataset needs ``collate_fn=batch_collate``. Samplers (shuffling, ``DistributedSampler``) are
    unaffected: they only choose the indices.
    """

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        # Images: one stack of per-row views. A tensor gather (x[index]) is as fast on an idle CPU but
        # runs as an OpenMP parallel region, which took 12 ms instead of 0.05 ms per batch on a loaded
        # 2-core machine (benchmarks/RESULTS.md, issue 12); the stack stays below the parallel grain.
        return [torch.stack([t[i] for i in indices]) if t.ndim > 1 else t[index] for t in self.tensors]


class EpochSeededSampler(RandomSampler):
    """A random permutation per epoch drawn from ``seed + epoch`` (Lightning calls ``set_epoch``).

    The order of epoch ``e`` depends only on ``seed`` and ``e``, not on how many epochs this process
    has iterated, so a run resumed from a checkpoint at epoch ``k`` sees the same batches as a straight
    run. (A loader seeded once with a ``torch.Generator`` restarts from its first permutation after a
    resume.) Under DDP Lightning swaps it for a ``DistributedSampler``, which seeds the same way.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


def batch_collate(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """The collate function of :class:`InMemoryTensorDataset` loaders: the batch is already stacked."""
    return batch


def check_num_classes(owner: str, num_classes: int, class_names: list[str]) -> None:
    """Raise when a model's ``num_classes`` differs from the data's classes."""
    if int(num_classes) != len(class_names):
        raise DataError(
            f"{owner}: the model has num_classes={num_classes} but the data has "
            f"{len(class_names)} classes {class_names[:10]}; set the model's num_classes to "
            f"{len(class_names)} (the lightkit CLI links it from data.num_classes)."
        )


def resolve_preprocessing(owner: str, module: Any, in_chans: int, class_names: list[str], image_size: int | None,
                          mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                          native_size: Callable[[], tuple[int, int]]) -> dict[str, Any]:
    """The input size, mean, std and interpolation: each given value wins, then the attached model's
    pretrained ``data_config``, then the native size (``native_size()``) and mean = std = 0.5.

    Raises:
        DataError: the attached model's ``num_classes`` or ``in_chans`` disagree with the data.
    """
    if module is not None:
        hparams = getattr(module, "hparams", None) or {}
        if hparams.get("num_classes") is not None:
            check_num_classes(owner, hparams["num_classes"], class_names)
    config = dict(getattr(module, "data_config", None) or {}) if module is not None else {}
    if module is not None:
        model_chans = ((getattr(module, "hparams", None) or {}).get("in_chans")
                       or (config.get("input_size") or (None,))[0])
        if model_chans is not None and int(model_chans) != in_chans:
            raise DataError(
                f"{owner}: the model takes in_chans={model_chans} but the data gives "
                f"{in_chans} channels; set data channels: {model_chans} (or link model.in_chans to data.in_chans)."
            )
    c = in_chans
    if image_size is not None:
        height = width = int(image_size)
    elif config.get("input_size"):
        height, width = (int(v) for v in config["input_size"][1:])
    else:
        height, width = native_size()

    def channel_stat(given: tuple[float, ...] | None, key: str) -> tuple[float, ...]:
        if given is not None:
            return given
        if config.get(key) is not None:
            values = tuple(float(v) for v in config[key])
            return values if len(values) == c else (sum(values) / len(values),) * c
        return (0.5,) * c

    return {
        "input_size": (c, height, width),
        "mean": channel_stat(mean, "mean"),
        "std": channel_stat(std, "std"),
        "interpolation": str(config.get("interpolation") or "bilinear"),
    }


class BaseImageDataModule(LightningDataModule):
    """Image classification data in memory: seeded stratified splits, resize + normalise once.

    Preprocessing (``self.preprocessing``, resolved in ``setup``): each of ``image_size``, ``mean``,
    ``std`` given here wins; otherwise it comes from the attached model's ``data_config`` (the
    encoder's pretrained preprocessing), otherwise the native image size and mean = std = 0.5.

    Splits: with one pool of images, ``test_fraction`` of all images go to test first, then
    ``val_fraction`` of all images to val, both stratified by class and seeded by ``seed``. A
    source with its own val / test images (``val/`` folder) uses them instead of splitting.

    Args:
        batch_size: images per batch (all loaders).
        num_workers: DataLoader worker processes per rank; 0 loads in the main process. Default
            ``null``: 0 for images in memory (fastest for the in-memory tensor datasets; give workers
            for augmentations), and for streamed images (see ``in_memory`` of the file data modules)
            the CPUs of the node shared by its ranks, minus one, at most 8.
        seed: seed of the splits, the few-shot selection and the train shuffling order; default: the
            run's global seed (``seed_everything``, env ``PL_GLOBAL_SEED``), else 0.
        val_fraction: fraction of all images for validation, in [0, 1).
        test_fraction: fraction of all images for testing, in [0, 1); with val_fraction below 1.
        samples_per_class: keep only this many train images per class (few-shot), chosen by a
            seeded shuffle of the train split.
        image_size: side of the square model input in pixels; default from the model or native.
        channels: 1 or 3 model input channels; gray data is replicated to RGB, RGB is converted to
            luma. Default: the data's native channels.
        mean: per-channel normalisation mean, on the 0..1 scale (one value: all channels).
        std: per-channel normalisation std, on the 0..1 scale (one value: all channels).
        augmentations: train augmentations: ``none`` / ``light`` / ``standard`` / ``strong`` or a
            list of ``{name: ..., **kwargs}`` (see :func:`lightkit.data.augment.build_augmentations`).
        fill: what fills the area uncovered by rotations / shifts: constant, edge, reflect,
            symmetric, wrap.
        predict_path: images to predict: a folder (searched recursively), one image, or a CSV with a
            ``path`` column (relative to the CSV's folder). Default: the test split.
        pin_memory: DataLoader ``pin_memory`` (page-locked host batches: faster, asynchronous copies to
            a GPU). Default ``null``: on when the trainer's accelerator is CUDA, off otherwise.
        persistent_workers: keep workers between epochs (only when ``num_workers > 0``).

    Raises:
        DataError: a value out of range; the message names it and the fix.
    """

    _class_names: tuple[str, ...] = ()
    flips_preserve_label: bool = True
    """Whether a mirrored image keeps its label (``False`` for digits: a flipped 2 is not a 2)."""
    native_channels: int = 3
    """Channels of the data as stored."""

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = None,
        seed: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        samples_per_class: int | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augmentations: str | list[dict[str, Any]] | None = None,
        fill: str = "constant",
        predict_path: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if batch_size < 1:
            raise DataError(f"{name}: batch_size={batch_size} must be >= 1.")
        if num_workers is not None and num_workers < 0:
            raise DataError(f"{name}: num_workers={num_workers} must be >= 0 (0: load in the main process), or "
                            f"null to choose from the CPU count.")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise DataError(f"{name}: {key}={value} must be in [0, 1) (a fraction of all images).")
        if val_fraction + test_fraction >= 1.0:
            raise DataError(
                f"{name}: val_fraction={val_fraction} + test_fraction={test_fraction} >= 1 leaves nothing to "
                f"train on; make their sum below 1 (e.g. 0.1 and 0.2)."
            )
        if samples_per_class is not None and samples_per_class < 1:
            raise DataError(f"{name}: samples_per_class={samples_per_class} must be >= 1, or null for all images.")
        if image_size is not None and image_size < 1:
            raise DataError(f"{name}: image_size={image_size} must be a positive number of pixels, or null.")
        if channels not in (None, 1, 3):
            raise DataError(f"{name}: channels={channels}; use 1 (gray), 3 (RGB) or null (the data's own).")
        self._in_chans = int(channels or self.native_channels)
        self.mean = self._per_channel("mean", mean)
        self.std = self._per_channel("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise DataError(f"{name}: std={std} must be positive.")
        if predict_path is not None and not Path(predict_path).exists():
            raise DataError(f"{name}: predict_path={predict_path!r} does not exist; give a folder of images, "
                            f"an image file or a CSV with a 'path' column.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        # The run's seed moves the split too, unless the data has its own: seeds are meant to vary a run.
        self.seed = int(seed) if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.samples_per_class = samples_per_class
        self.image_size = image_size
        self.channels = channels
        self.augmentations = augmentations
        self.fill = fill
        self.predict_path = predict_path
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        if augmentations is not None:
            from lightkit.data.augment import build_augmentations

            # Validate the spec and fill now (the real pipeline is built in setup, at the resolved size).
            build_augmentations(augmentations, image_size or 32, fill, self.flips_preserve_label, where=name)
        self.save_hyperparameters()
        self.preprocessing: dict[str, Any] = {}
        self.predict_items: list[str] = []
        self.predict_skipped: list[str] = []
        self._pools: dict[str, ImagePool] | None = None
        self._splits: dict[str, tuple[str, np.ndarray]] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._names: dict[str, list[str]] = {}
        self._built_for: tuple[Any, ...] | None = None

    # -- what subclasses provide -------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """Class names, index order."""
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def in_chans(self) -> int:
        """Model input channels: ``channels`` if given, else the data's native channels."""
        return self._in_chans

    def _load_pools(self) -> dict[str, ImagePool]:
        """Labelled images: ``{"train": ...}`` plus ``"val"`` / ``"test"`` where the source has them."""
        raise NotImplementedError

    def _native_size(self) -> tuple[int, int]:
        """``(height, width)`` used when neither ``image_size`` nor the model says: the most common."""
        images = self._get_pools()["train"].images
        if isinstance(images, np.ndarray):
            return int(images.shape[1]), int(images.shape[2])
        return Counter(img.shape[:2] for img in images).most_common(1)[0][0]

    # -- checks ------------------------------------------------------------------------------
    def check_num_classes(self, num_classes: int) -> None:
        """Raise when a model's ``num_classes`` differs from the data's classes."""
        check_num_classes(type(self).__name__, num_classes, self.class_names)

    def _per_channel(self, key: str, values: list[float] | None) -> tuple[float, ...] | None:
        if values is None:
            return None
        values = [float(v) for v in values]
        if len(values) not in (1, self._in_chans):
            raise DataError(f"{type(self).__name__}: {key}={values} has {len(values)} values for "
                            f"{self._in_chans} channels; give one value or {self._in_chans}.")
        return tuple(values * self._in_chans) if len(values) == 1 else tuple(values)

    def _attached_module(self) -> Any:
        if self.trainer is None:
            return None
        try:
            return self.trainer.lightning_module
        except (AttributeError, RuntimeError):
            return None

    def _resolve_preprocessing(self) -> dict[str, Any]:
        return resolve_preprocessing(type(self).__name__, self._attached_module(), self.in_chans, self.class_names,
                                     self.image_size, self.mean, self.std, self._native_size)

    # -- splits and datasets -----------------------------------------------------------------
    def _get_pools(self) -> dict[str, ImagePool]:
        if self._pools is None:
            self._pools = self._load_pools()
        return self._pools

    def _get_splits(self) -> dict[str, tuple[str, np.ndarray]]:
        if self._splits is not None:
            return self._splits
        pools = self._get_pools()
        name = type(self).__name__
        labels = pools["train"].labels
        parts = stratified_split(
            labels,
            0.0 if "val" in pools else self.val_fraction,
            0.0 if "test" in pools else self.test_fraction,
            self.seed,
            where=name,
        )
        splits = {s: (s, np.arange(len(pools[s].labels))) if s in pools and s != "train" else ("train", parts[s])
                  for s in ("train", "val", "test")}
        if self.samples_per_class is not None:
            kept = few_shot_indices(labels, parts["train"], self.samples_per_class, self.seed, self.class_names, name)
            splits["train"] = ("train", kept)
        self._splits = splits
        return splits

    def seed_picks_split(self) -> bool:
        """Whether ``seed`` decides which images are train / val / test: a split cut from ``train`` (no ``val`` or
        no ``test`` folder) or a few-shot selection (``samples_per_class``), as :meth:`_get_splits` does."""
        pools = self._get_pools()
        return not ("val" in pools and "test" in pools) or self.samples_per_class is not None

    def split_sizes(self) -> dict[str, int]:
        """Images per split (``train`` after the few-shot selection)."""
        return {s: len(idx) for s, (_, idx) in self._get_splits().items()}

    def _preprocess(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        _, height, width = self.preprocessing["input_size"]
        return resize_images(images, (height, width), self.preprocessing["interpolation"])

    def _train_transform(self) -> Any:
        """The albumentations pipeline of the train split at the resolved input size, or ``None``."""
        if self.augmentations is None:
            return None
        from lightkit.data.augment import build_augmentations

        _, height, width = self.preprocessing["input_size"]
        if height != width:
            raise DataError(f"{type(self).__name__}: augmentations need a square input but the input size is "
                            f"{height}x{width}; set image_size.")
        return build_augmentations(self.augmentations, height, self.fill, self.flips_preserve_label,
                                   where=self._augment_where())

    def _augment_where(self) -> str:
        """How augmentation warnings name this data module."""
        return type(self).__name__

    def _streaming_dataset(self, paths: list[str], labels: torch.Tensor, transform: Any,
                           on_bad_image: str) -> StreamingImageDataset:
        _, height, width = self.preprocessing["input_size"]
        return StreamingImageDataset(paths, labels, self.in_chans, (height, width), self.preprocessing["interpolation"],
                                     self.preprocessing["mean"], self.preprocessing["std"], transform, self.seed,
                                     on_bad_image)

    def _build(self, split: str) -> None:
        key, idx = self._get_splits()[split]
        pool = self._get_pools()[key]
        labels = torch.from_numpy(np.asarray(pool.labels)[idx].astype(np.int64))
        self._names[split] = ([pool.names[i] for i in idx] if pool.names is not None
                              else [f"{split}/{i:05d}" for i in range(len(idx))])
        if isinstance(pool.images, LazyImages):  # streaming: decode, resize and augment in the loader's workers
            transform = self._train_transform() if split == "train" else None
            paths = [pool.images.paths[i] for i in idx]
            self._datasets[split] = self._streaming_dataset(paths, labels, transform,
                                                            str(getattr(self, "on_bad_image", "error")))
            return
        images = pool.images[idx] if isinstance(pool.images, np.ndarray) else [pool.images[i] for i in idx]
        x = self._preprocess(images)
        mean, std = self.preprocessing["mean"], self.preprocessing["std"]
        if split == "train" and self.augmentations is not None:
            transform = self._train_transform()
            if transform is not None:
                hwc = x.permute(0, 2, 3, 1).contiguous().numpy()
                self._datasets[split] = AugmentedImageDataset(hwc, labels, transform, mean, std)
                return
        if x.numel() * 4 > _WARN_BYTES:
            rank_zero_warn(f"{type(self).__name__}: the normalised {split} split takes {x.numel() * 4 / 2**30:.1f} GiB "
                           f"of memory at input size {tuple(x.shape[1:])}; "
                           "set a smaller image_size if that is too much.")
        self._datasets[split] = TensorDataset(normalize(x, mean, std), labels)

    def _streams(self) -> bool:
        """Whether images are decoded in the loaders' workers (file data modules decide; embedded: never)."""
        return False

    def _build_predict(self) -> None:
        paths, items = self._predict_files()
        if self._streams():
            from lightkit.data.stream import scan_headers

            _, kept, bad = scan_headers(paths)
        else:
            images, kept, bad = decode_images(paths, self.in_chans)
        self.predict_skipped = [path for path, _ in bad]
        if bad:
            rank_zero_warn(f"{type(self).__name__}: predict_path={self.predict_path!r}: skipped {len(bad)} "
                           f"unreadable images: first {bad[0][0]!r} ({bad[0][1]}).")
        if not kept:
            raise DataError(f"{type(self).__name__}: predict_path={self.predict_path!r} holds no readable image "
                            f"({len(bad)} unreadable); point it at a folder of images or a CSV with a 'path' column.")
        self.predict_items = [items[i] for i in kept]
        if self._streams():  # an image found unreadable only when decoded is left out of its batch
            self._datasets["predict"] = self._streaming_dataset([str(paths[i]) for i in kept],
                                                                torch.arange(len(kept)), None, "skip")
            return
        x = normalize(self._preprocess(images), self.preprocessing["mean"], self.preprocessing["std"])
        self._datasets["predict"] = TensorDataset(x, torch.arange(len(images)))

    def _predict_files(self) -> tuple[list[Path], list[str]]:
        path = Path(str(self.predict_path))
        name = type(self).__name__
        if path.is_dir():
            files, _ = list_images(path, recursive=True)
            if not files:
                raise DataError(f"{name}: predict_path={self.predict_path!r} contains no image files.")
            return files, [str(f) for f in files]
        if path.suffix.lower() == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            if "path" not in frame.columns:
                raise DataError(f"{name}: predict_path CSV {str(path)!r} has no 'path' column (columns: "
                                f"{list(frame.columns)}); add a 'path' column of image paths.")
            items = [str(p) for p in frame["path"]]
            return [p if p.is_absolute() else path.parent / p for p in map(Path, items)], items
        return [path], [str(path)]

    def setup(self, stage: str) -> None:
        """Resolve the preprocessing, check the attached model, and build the stage's datasets once."""
        self.preprocessing = self._resolve_preprocessing()
        key = tuple(self.preprocessing.values())
        if key != self._built_for:
            self._datasets.clear()
            self._built_for = key
        if stage == "predict" and self.predict_path is not None:
            self._build_predict()
            return
        for split in _STAGES.get(stage, ("train", "val", "test")):
            if split not in self._datasets:
                self._build(split)

    # -- loaders -----------------------------------------------------------------------------
    def _dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            if not self.preprocessing:
                self.setup({"train": "fit", "val": "validate", "test": "test"}.get(split, "fit"))
            if split not in self._datasets:
                self._build(split)
        return self._datasets[split]

    def _pin_memory(self) -> bool:
        """``pin_memory`` as given, else whether the attached trainer runs on CUDA."""
        if self.pin_memory is not None:
            return self.pin_memory
        from lightning.pytorch.accelerators import CUDAAccelerator

        return isinstance(getattr(self.trainer, "accelerator", None), CUDAAccelerator)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        if isinstance(dataset, StreamingImageDataset) or isinstance(getattr(dataset, "base", None),
                                                                    StreamingImageDataset):
            return self._streaming_loader(dataset, shuffle)
        if type(dataset) is TensorDataset:  # the in-memory splits: read a batch with one index per tensor
            dataset = InMemoryTensorDataset(*dataset.tensors)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(dataset, self.seed) if shuffle else None,
            num_workers=self.num_workers or 0,
            collate_fn=batch_collate if isinstance(dataset, InMemoryTensorDataset) else None,
            pin_memory=self._pin_memory(),
            persistent_workers=self.persistent_workers and bool(self.num_workers),
            drop_last=False,
        )

    def _streaming_loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """Workers decode; the train loader is this rank's resumable share of a seeded permutation."""
        trainer = self.trainer
        world, rank = (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)
        local = int(getattr(trainer, "num_devices", 1) or 1) if trainer is not None else 1
        workers = self.num_workers if self.num_workers is not None else default_num_workers(local)
        options: dict[str, Any] = {
            "batch_size": self.batch_size, "num_workers": workers, "collate_fn": skip_bad_collate,
            "pin_memory": self._pin_memory(), "persistent_workers": self.persistent_workers and workers > 0,
            "drop_last": False,
        }
        if not shuffle:
            return DataLoader(dataset, **options)
        sampler = ResumableSampler(dataset, self.seed, shuffle=True, num_replicas=world, rank=rank, pairs=True)
        return ResumableLoader(dataset, sampler, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), shuffle=False)

    def _test_dataset(self) -> Dataset:
        dataset = self._dataset("test")
        if len(dataset) == 0:
            raise DataError(f"{type(self).__name__}: there is no test split (test_fraction=0 and no test "
                            f"images of its own); set test_fraction > 0.")
        return dataset

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test_dataset(), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """``(x, index)`` batches; ``self.predict_items[index]`` names each input."""
        if self.predict_path is not None:
            if "predict" not in self._datasets:
                if not self.preprocessing:
                    self.preprocessing = self._resolve_preprocessing()
                self._build_predict()
            return self._loader(self._datasets["predict"], shuffle=False)
        test = self._test_dataset()
        self.predict_items = list(self._names["test"])
        if isinstance(test, StreamingImageDataset):
            return self._loader(self._streaming_dataset(test.paths, torch.arange(len(test)), None, "skip"),
                                shuffle=False)
        x = test.tensors[0]  # in memory, val / test / predict are always TensorDatasets
        return self._loader(TensorDataset(x, torch.arange(len(x))), shuffle=False)
