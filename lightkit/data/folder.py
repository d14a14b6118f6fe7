"""Image files on disk: a folder of class folders (``ImageFolderDataModule``) or a CSV (``CSVDataModule``).

Class names are scanned in ``__init__`` (folder names / the label column, no image decoded), so the
CLI can link ``num_classes``, ``in_chans`` and ``class_names`` into the model at instantiation.
Small sets are decoded once in ``setup`` and kept in memory; sets that would take more than
``in_memory_limit_gb`` decoded are streamed: read, decoded and augmented per batch in the loaders'
workers (:mod:`lightkit.data.stream`), with the same splits, classes, policies and tensors.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.data.base import BaseImageDataModule, ImagePool
from lightkit.data.errors import BadImageError, DataError
from lightkit.data.images import IMAGE_EXTENSIONS, decode_images, list_images
from lightkit.data.stream import LazyImages, default_num_workers, scan_headers

__all__ = ["CSVDataModule", "FileImageDataModule", "ImageFolderDataModule"]

OnBadImage = Literal["error", "skip"]
_SPLITS = ("train", "val", "test")


def _check_policy(owner: str, on_bad_image: str) -> None:
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"{owner}: on_bad_image={on_bad_image!r}; use 'error' (stop at the first unreadable "
                        f"image) or 'skip' (leave unreadable images out, with a warning).")


def _check_classes(owner: str, classes: list[str] | None) -> None:
    if classes is not None and (not classes or len(set(classes)) != len(classes)):
        raise DataError(f"{owner}: classes={classes} must be a non-empty list of distinct names, or null.")


def _bad_image_error(owner: str, bad: list[tuple[str, str]]) -> BadImageError:
    first = f"{bad[0][0]!r} ({bad[0][1]})"
    return BadImageError(f"{owner}: unreadable image {first}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                         + "; replace or delete it, or set on_bad_image: skip to leave such images out.")


def decode_pool(owner: str, paths: list[Path], labels: np.ndarray, channels: int, on_bad_image: str,
                skipped: list[str], headers: dict[str, tuple[int, int, int] | str] | None = None) -> ImagePool:
    """Decode labelled files into an :class:`ImagePool`, applying the unreadable-image policy.

    Skipped paths are appended to ``skipped``. With ``headers`` (path -> size, or the reason PIL
    could not open it: :func:`~lightkit.data.stream.scan_headers`) nothing is decoded: the pool's
    images are :class:`~lightkit.data.stream.LazyImages` of the openable files (streaming).

    Raises:
        BadImageError: an unreadable image with ``on_bad_image="error"``.
    """
    images: list[np.ndarray] | LazyImages
    if headers is None:
        images, kept, bad = decode_images(paths, channels)
    else:
        kept = [i for i, path in enumerate(paths) if not isinstance(headers[str(path)], str)]
        bad = [(str(path), str(headers[str(path)])) for path in paths if isinstance(headers[str(path)], str)]
        images = LazyImages([paths[i] for i in kept], channels)
    if bad:
        first = f"{bad[0][0]!r} ({bad[0][1]})"
        if on_bad_image == "error":
            raise _bad_image_error(owner, bad)
        skipped.extend(path for path, _ in bad)
        rank_zero_warn(f"{owner}: skipped {len(bad)} unreadable images: first {first}.")
    return ImagePool(images, np.asarray(labels, dtype=np.int64)[kept], [str(paths[i]) for i in kept])


def looks_gray(paths: list[Path], limit: int = 24) -> bool:
    """Whether the images are gray: every one of up to ``limit`` files, spread over the list, is stored
    as gray (PIL modes L, LA, I, I;16, F, 1) or as RGB with three equal channels. Unreadable files are
    left to the decode policy."""
    from PIL import Image

    if not paths:
        return False
    step = max(len(paths) // limit, 1)
    seen = 0
    for path in paths[::step][:limit]:
        try:
            with Image.open(path) as img:
                if img.mode in ("L", "LA", "I", "I;16", "F", "1"):
                    seen += 1
                    continue
                rgb = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.int16)
        except (OSError, ValueError, SyntaxError):
            continue
        if np.abs(rgb[..., 0] - rgb[..., 1]).max() > 2 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 2:
            return False
        seen += 1
    return seen > 0


def auto_channels(module: BaseImageDataModule, channels: int | None, paths: list[Path]) -> None:
    """With ``channels`` unset, gray images run at 1 channel and colour at 3; says so in one line."""
    if channels is not None:
        return
    gray = looks_gray(paths)
    module._in_chans = 1 if gray else 3  # noqa: SLF001 - the base class owns the attribute, set once here
    # mean / std as the user gave them (one value, or one per channel of the data as it turned out)
    module.mean = module._per_channel("mean", module.hparams.get("mean"))  # noqa: SLF001
    module.std = module._per_channel("std", module.hparams.get("std"))  # noqa: SLF001
    rank_zero_info(f"{type(module).__name__}: the images are {'gray' if gray else 'colour'} -> channels="
                   f"{module._in_chans} (set data channels: 1 or 3 to choose).")  # noqa: SLF001


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class FileImageDataModule(BaseImageDataModule):
    """Images stored as files: the arguments the folder and CSV data modules share, and where the
    decoded images live.

    ``in_memory: auto`` reads the image headers first (tens of microseconds per file: sizes, and the
    files PIL cannot open) and estimates what the in-memory path would hold: every decoded image plus
    its resized ``float32`` copy. Up to ``in_memory_limit_gb`` the images are decoded once in ``setup``
    and kept (fastest for small sets); above it they are streamed: decoded, resized and augmented per
    batch in the loaders' workers, memory bounded by their prefetch (:mod:`lightkit.data.stream`).
    Both give the same tensors for the same image; the streaming train loader resumes mid-epoch and
    under DDP each rank reads only its share. One line says which path was taken and why.

    Args:
        classes: class names in index order (e.g. to match a pretrained head); default: from the data.
        on_bad_image: ``error`` stops at an unreadable image; ``skip`` leaves it out, with a warning
            and the paths in ``self.skipped_images``. Streaming finds missing and non-image files in
            the header scan; an image truncated past its header fails when a worker decodes it, and
            ``skip`` then drops it from its batch.
        flips: whether a mirrored image keeps its label, so augmentation presets may flip: true for
            photos of objects, false for digits, text and anything with a handedness; ``auto``: decided
            from the train and validation images when first needed (:func:`lightkit.baseline.mirror_test`:
            a linear model on pixels that loses most of its skill on mirrored images means no flips),
            said in one line; ``flips_decision`` holds the figures.
        in_memory: ``auto`` (decide by ``in_memory_limit_gb``), ``true`` (decode all in ``setup``, no
            header scan) or ``false`` (always stream).
        in_memory_limit_gb: with ``auto``, the largest estimated in-memory footprint in GiB (decoded
            images plus the model-size ``float32`` splits) that is still kept in memory.
        batch_size ... persistent_workers: see :class:`BaseImageDataModule`.

    Raises:
        DataError: a bad ``on_bad_image``, ``classes``, ``in_memory`` or ``in_memory_limit_gb``.
    """

    def __init__(
        self,
        classes: list[str] | None = None,
        on_bad_image: OnBadImage = "error",
        flips: bool | Literal["auto"] = True,
        in_memory: bool | Literal["auto"] = "auto",
        in_memory_limit_gb: float = 2.0,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if flips not in (True, False, "auto"):
            raise DataError(f"{owner}: flips={flips!r}; use true (mirrored images keep their label: photos), false "
                            f"(digits, text) or auto (decided from the images).")
        self.flips = flips
        self.flips_decision: Any = None
        self._flips_decidable = False  # the base class reads flips_preserve_label in __init__, before any data
        super().__init__(**kwargs)
        self._flips_decidable = True
        _check_policy(owner, on_bad_image)
        _check_classes(owner, classes)
        if in_memory not in (True, False, "auto"):
            raise DataError(f"{owner}: in_memory={in_memory!r}; use auto (by in_memory_limit_gb), true (decode all "
                            f"images in setup) or false (decode per batch in the loader workers).")
        if not in_memory_limit_gb > 0:
            raise DataError(f"{owner}: in_memory_limit_gb={in_memory_limit_gb} must be a positive number of GiB.")
        self.classes = classes
        self.on_bad_image = on_bad_image
        self.in_memory = in_memory
        self.in_memory_limit_gb = float(in_memory_limit_gb)
        self.skipped_images: list[str] = []
        self._stream: bool | None = None
        self._headers: dict[str, tuple[int, int, int] | str] | None = None

    @property
    def flips_preserve_label(self) -> bool:  # type: ignore[override]
        """``flips`` as given; with ``auto``, decided once from the images when first asked (the train
        augmentation, TTA, shards), with one line that says what was decided and why."""
        if self.flips != "auto":
            return bool(self.flips)
        if not self._flips_decidable:  # the augmentation list checked in __init__: no data yet, no warning
            return True
        if self.flips_decision is None:
            from lightkit.baseline import FlipDecision, mirror_test

            owner = type(self).__name__
            try:
                self.flips_decision = mirror_test(self)
            except (OSError, ValueError) as exc:  # DataError / BadImageError: e.g. predicting without train images
                self.flips_decision = FlipDecision(False, math.nan, math.nan, math.nan, None, 0, 0.0,
                                                   f"the train and validation images could not be read ({exc})")
                rank_zero_warn(f"{owner}: flips: auto -> off: {self.flips_decision.describe()}; set flips: true "
                               f"or false to choose.")
            else:
                rank_zero_info(f"{owner}: flips: auto -> {'on' if self.flips_decision.flips else 'off'}: "
                               f"{self.flips_decision.describe()} (set flips: true / false to choose).")
        return bool(self.flips_decision.flips)

    def state_dict(self) -> dict[str, Any]:
        """The ``flips: auto`` decision, kept in checkpoints: a resumed fit, ``test`` and ``predict`` (TTA)
        reuse the fit's decision instead of deciding again from data that may have changed or be absent."""
        if self.flips != "auto" or self.flips_decision is None:
            return {}
        return {"flips_decision": dataclasses.asdict(self.flips_decision)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("flips_decision")
        if self.flips == "auto" and saved is not None:
            from lightkit.baseline import FlipDecision

            previous = self.flips_decision
            known = {f.name for f in dataclasses.fields(FlipDecision)}
            self.flips_decision = FlipDecision(**{k: v for k, v in saved.items() if k in known})
            if previous is not None and bool(previous.flips) != bool(self.flips_decision.flips):
                # a resumed fit built its train split in setup, before Lightning restored this state: rebuild
                # it with the fit's decision when the train loader is asked for
                self._datasets.pop("train", None)

    def _augment_where(self) -> str:
        if self.flips == "auto" and not self.flips_preserve_label:
            # an explicit flip in the list then warns naming this decision, not an attribute the user never set
            return f"{type(self).__name__} (flips: auto decided off; set flips: true if mirrored images keep the label)"
        return super()._augment_where()

    def _all_files(self) -> list[Path]:
        """Every labelled image file of the data, all splits."""
        raise NotImplementedError

    def _header_table(self) -> dict[str, tuple[int, int, int] | str]:
        """Path -> ``(height, width, stored channels)``, or the reason PIL cannot open it (scanned once)."""
        if self._headers is None:
            files = self._all_files()
            sizes, kept, bad = scan_headers(files)
            table: dict[str, tuple[int, int, int] | str] = {str(files[i]): size
                                                            for i, size in zip(kept, sizes, strict=True)}
            table.update(bad)
            self._headers = table
        return self._headers

    def _streams(self) -> bool:
        """Whether images are streamed (decided once, see the class docstring)."""
        if self._stream is not None:
            return self._stream
        owner = type(self).__name__
        if self.in_memory is True:
            self._stream = False
            return False
        sizes = [v for v in self._header_table().values() if not isinstance(v, str)]
        c, height, width = (self.preprocessing or self._resolve_preprocessing())["input_size"]
        decoded = sum(h * w for h, w, _ in sizes) * self.in_chans + len(sizes) * c * height * width * 4
        gib = decoded / 2**30
        self._stream = self.in_memory is False or gib > self.in_memory_limit_gb
        workers = self.num_workers if self.num_workers is not None else default_num_workers()
        if self.in_memory is False:
            rank_zero_info(f"{owner}: in_memory=false -> streaming {len(sizes)} images from disk, decoded in "
                           f"{workers} loader workers per rank.")
        elif self._stream:
            rank_zero_info(f"{owner}: {len(sizes)} images would take ~{gib:.1f} GiB in memory > in_memory_limit_gb="
                           f"{self.in_memory_limit_gb:g} -> streaming from disk, decoded in {workers} loader workers "
                           f"per rank (in_memory: true keeps them in memory).")
        return self._stream

    def _native_size(self) -> tuple[int, int]:
        if self.in_memory is True:
            return super()._native_size()
        table = self._header_table()
        train = [str(p) for p in self._train_files()]
        sizes = [table[k][:2] for k in train if not isinstance(table[k], str)]
        bad = [(k, str(table[k])) for k in train if isinstance(table[k], str)]
        if bad and (self.on_bad_image == "error" or not sizes):
            raise _bad_image_error(type(self).__name__, bad)
        return Counter(sizes).most_common(1)[0][0]

    def _train_files(self) -> list[Path]:
        """The image files of the train pool (the native size is their most common size)."""
        return self._all_files()

    def native_size(self) -> tuple[int, int]:
        """``(height, width)`` used when neither ``image_size`` nor the model says: the most common size."""
        return self._native_size()

    def file_splits(self) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
        """Paths, labels and names per split after the split, few-shot and header-scan rules, nothing
        decoded (what ``prepare`` writes as shards).

        Raises:
            DataError: the images were already decoded in memory (call it on a fresh data module).
        """
        if self._pools is not None and not self._streams():
            raise DataError(f"{type(self).__name__}: file_splits() after the images were decoded in memory; call "
                            f"it on a new data module.")
        self._stream = True
        pools, out = self._get_pools(), {}
        for split, (key, idx) in self._get_splits().items():
            images = pools[key].images
            assert isinstance(images, LazyImages)  # noqa: S101 - set two lines above
            names = pools[key].names
            out[split] = ([images.paths[i] for i in idx], np.asarray(pools[key].labels)[idx],
                          [names[i] for i in idx] if names is not None else [images.paths[i] for i in idx])
        return out

    def _pool(self, owner: str, paths: list[Path], labels: np.ndarray) -> ImagePool:
        """Labelled files as a pool: decoded now (in memory) or on demand (streaming)."""
        headers = self._header_table() if self._streams() else None
        return decode_pool(owner, paths, labels, self.in_chans, self.on_bad_image, self.skipped_images, headers)


class ImageFolderDataModule(FileImageDataModule):
    """Images in class folders: ``root/train/<class>/*.png`` (+ ``val/``, ``test/``) or ``root/<class>/*.png``.

    With ``train/`` (a folder of class folders), ``val/`` and ``test/`` are used when present and
    the missing ones are split from ``train/`` by the fractions; without it, the class folders of
    ``root`` are split into train / val / test. Class folders are searched recursively; files that
    are not images (by suffix) are ignored with a warning. RGB natively (gray and palette images are
    converted); ``channels`` unset: 1 when the images are gray, 3 otherwise. ``classes`` defaults to
    the sorted class folder names of ``train/`` (or ``root``); every class folder must be listed.

    Args:
        root: the data folder.
        classes ... in_memory_limit_gb: see :class:`FileImageDataModule`.
        batch_size ... persistent_workers: see :class:`BaseImageDataModule`.

    Raises:
        DataError: ``root`` missing or without class folders, an empty class folder, a ``val/`` or
            ``test/`` class that is not a class of ``train/`` (or of ``classes``).
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self._files = self._scan(Path(root).expanduser(), self.classes)
        auto_channels(self, self.channels, [path for path, _ in self._files["train"]])

    def _scan(self, root: Path, classes: list[str] | None) -> dict[str, list[tuple[Path, str]]]:
        owner = type(self).__name__
        if not root.is_dir():
            raise DataError(f"{owner}: root={str(root)!r} is not a folder; give a folder holding train/ (and "
                            f"val/, test/) with one folder per class, or one folder per class directly.")
        train = root / "train"
        if train.is_dir() and _subdirs(train):
            folders = {s: root / s for s in _SPLITS if (root / s).is_dir()}
            others = [p.name for p in _subdirs(root) if p.name not in _SPLITS]
            if others:
                rank_zero_warn(f"{owner}: ignored folders {others[:5]} next to train/; only train/, val/ and test/ "
                               f"are read (rename e.g. validation/ to val/).")
        else:
            folders = {"train": root}
        if not _subdirs(folders["train"]):
            raise DataError(f"{owner}: {str(folders['train'])!r} has no class folders; put each class's images "
                            f"in its own folder (root/<class>/img.png or root/train/<class>/img.png).")
        self._class_names = tuple(classes) if classes is not None else tuple(
            p.name for p in _subdirs(folders["train"]))
        files: dict[str, list[tuple[Path, str]]] = {}
        ignored: list[Path] = []
        for split, folder in folders.items():
            entries: list[tuple[Path, str]] = []
            for class_dir in _subdirs(folder):
                if class_dir.name not in self._class_names:
                    where = "classes" if classes is not None else "the class folders of train/"
                    raise DataError(f"{owner}: class folder {str(class_dir)!r} is not one of {where} "
                                    f"{list(self._class_names)[:10]}; rename or remove it, or add it to classes.")
                images, others = list_images(class_dir, recursive=True)
                ignored += others
                if not images:
                    raise DataError(f"{owner}: class folder {str(class_dir)!r} has no images "
                                    f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder.")
                entries += [(path, class_dir.name) for path in images]
            files[split] = entries
        if ignored:
            rank_zero_warn(f"{owner}: ignored {len(ignored)} files that are not images: first {str(ignored[0])!r}.")
        return files

    def _all_files(self) -> list[Path]:
        return [path for entries in self._files.values() for path, _ in entries]

    def _train_files(self) -> list[Path]:
        return [path for path, _ in self._files["train"]]

    def _load_pools(self) -> dict[str, ImagePool]:
        index = {name: i for i, name in enumerate(self._class_names)}
        pools = {}
        for split, entries in self._files.items():
            paths = [path for path, _ in entries]
            labels = np.array([index[name] for _, name in entries], dtype=np.int64)
            pools[split] = self._pool(f"{type(self).__name__} ({split})", paths, labels)
        return pools


class CSVDataModule(FileImageDataModule):
    """Images listed in a CSV: one row per image, a path column and a label column.

    Labels may be strings or integers; class names are the sorted distinct labels (integers in
    numeric order, named ``"0"``, ``"1"``...) unless ``classes`` fixes them. The rows are split by
    the fractions like one image folder.

    Args:
        csv_path: the CSV file.
        path_column: column of image paths, relative to ``root``.
        label_column: column of labels.
        root: folder the paths are relative to; default the CSV's folder.
        classes ... in_memory_limit_gb: see :class:`FileImageDataModule` (every label must be one of
            ``classes`` when given).
        batch_size ... persistent_workers: see :class:`BaseImageDataModule`.

    Raises:
        DataError: a missing CSV or column, an empty path or label, a label not in ``classes``.
    """

    def __init__(
        self,
        csv_path: str,
        path_column: str = "path",
        label_column: str = "label",
        root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.csv_path = csv_path
        self.path_column = path_column
        self.label_column = label_column
        self.root = root
        self._paths, self._labels = self._read(self.classes)
        auto_channels(self, self.channels, self._paths)

    def _read(self, classes: list[str] | None) -> tuple[list[Path], np.ndarray]:
        import pandas as pd

        owner = type(self).__name__
        csv = Path(self.csv_path).expanduser()
        if not csv.is_file():
            raise DataError(f"{owner}: csv_path={self.csv_path!r} is not a file; give a CSV with "
                            f"{self.path_column!r} and {self.label_column!r} columns.")
        root = Path(self.root).expanduser() if self.root is not None else csv.parent
        if not root.is_dir():
            raise DataError(f"{owner}: root={self.root!r} is not a folder; set it to the folder the CSV's paths "
                            f"are relative to, or null for the CSV's own folder.")
        frame = pd.read_csv(csv)
        for key, column in (("path_column", self.path_column), ("label_column", self.label_column)):
            if column not in frame.columns:
                raise DataError(f"{owner}: {key}={column!r} is not a column of {str(csv)!r} (columns: "
                                f"{list(frame.columns)}); set {key} to one of them.")
        if frame.empty:
            raise DataError(f"{owner}: {str(csv)!r} has no rows; list one image per row.")
        for column in (self.path_column, self.label_column):
            missing = np.flatnonzero(frame[column].isna().to_numpy())
            if len(missing):
                raise DataError(f"{owner}: {len(missing)} rows of {str(csv)!r} have no {column!r} (first: data "
                                f"row {missing[0] + 1}); fill them in or delete the rows.")
        raw = frame[self.label_column]
        if pd.api.types.is_numeric_dtype(raw) and np.all(np.mod(raw.to_numpy(dtype=float), 1) == 0):
            ints = raw.to_numpy(dtype=float).astype(np.int64)
            labels = [str(v) for v in ints]
            found = [str(v) for v in sorted(set(ints.tolist()))]
        else:
            labels = [str(v) for v in raw]
            found = sorted(set(labels))
        self._class_names = tuple(classes) if classes is not None else tuple(found)
        index = {name: i for i, name in enumerate(self._class_names)}
        unknown = [label for label in labels if label not in index]
        if unknown:
            raise DataError(f"{owner}: label {unknown[0]!r} in {str(csv)!r} is not in classes "
                            f"{list(self._class_names)[:10]}; add it to classes or fix the CSV.")
        paths = [p if p.is_absolute() else root / p for p in (Path(str(v)) for v in frame[self.path_column])]
        return paths, np.array([index[label] for label in labels], dtype=np.int64)

    def _all_files(self) -> list[Path]:
        return list(self._paths)

    def _load_pools(self) -> dict[str, ImagePool]:
        return {"train": self._pool(type(self).__name__, self._paths, self._labels)}
