"""Image files on disk: a folder of class folders (``ImageFolderDataModule``) or a CSV (``CSVDataModule``).

Class names are scanned in ``__init__`` (folder names / the label column, no image decoded), so the
CLI can link ``num_classes``, ``in_chans`` and ``class_names`` into the model at instantiation.
The images are decoded once in ``setup`` and kept in memory: these are small fine-tuning sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.data.base import BaseImageDataModule, ImagePool
from lightkit.data.errors import BadImageError, DataError
from lightkit.data.images import IMAGE_EXTENSIONS, decode_images, list_images

__all__ = ["CSVDataModule", "ImageFolderDataModule"]

OnBadImage = Literal["error", "skip"]
_SPLITS = ("train", "val", "test")


def _check_policy(owner: str, on_bad_image: str) -> None:
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"{owner}: on_bad_image={on_bad_image!r}; use 'error' (stop at the first unreadable "
                        f"image) or 'skip' (leave unreadable images out, with a warning).")


def _check_classes(owner: str, classes: list[str] | None) -> None:
    if classes is not None and (not classes or len(set(classes)) != len(classes)):
        raise DataError(f"{owner}: classes={classes} must be a non-empty list of distinct names, or null.")


def decode_pool(owner: str, paths: list[Path], labels: np.ndarray, channels: int, on_bad_image: str,
                skipped: list[str]) -> ImagePool:
    """Decode labelled files into an :class:`ImagePool`, applying the unreadable-image policy.

    Skipped paths are appended to ``skipped``.

    Raises:
        BadImageError: an unreadable image with ``on_bad_image="error"``.
    """
    images, kept, bad = decode_images(paths, channels)
    if bad:
        first = f"{bad[0][0]!r} ({bad[0][1]})"
        if on_bad_image == "error":
            raise BadImageError(f"{owner}: unreadable image {first}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                                + "; replace or delete it, or set on_bad_image: skip to leave such images out.")
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


class ImageFolderDataModule(BaseImageDataModule):
    """Images in class folders: ``root/train/<class>/*.png`` (+ ``val/``, ``test/``) or ``root/<class>/*.png``.

    With ``train/`` (a folder of class folders), ``val/`` and ``test/`` are used when present and
    the missing ones are split from ``train/`` by the fractions; without it, the class folders of
    ``root`` are split into train / val / test. Class folders are searched recursively; files that
    are not images (by suffix) are ignored with a warning. RGB natively (gray and palette images are
    converted); ``channels`` unset: 1 when the images are gray, 3 otherwise.

    Args:
        root: the data folder.
        classes: class names in index order (e.g. to match a pretrained head); default: the sorted
            class folder names of ``train/`` (or ``root``). Every class folder must be listed.
        on_bad_image: ``error`` stops at an unreadable image; ``skip`` leaves it out, with a warning
            and the paths in ``self.skipped_images``.
        flips: whether a mirrored image keeps its label, so augmentation presets may flip: true for
            photos of objects, false for digits, text and anything with a handedness.
        batch_size ... persistent_workers: see :class:`BaseImageDataModule`.

    Raises:
        DataError: ``root`` missing or without class folders, an empty class folder, a ``val/`` or
            ``test/`` class that is not a class of ``train/`` (or of ``classes``).
    """

    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        on_bad_image: OnBadImage = "error",
        flips: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
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
        self.flips_preserve_label = flips  # read by the base class when it checks the augmentations
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
            test_fraction=test_fraction, samples_per_class=samples_per_class, image_size=image_size,
            channels=channels, mean=mean, std=std, augmentations=augmentations, fill=fill,
            predict_path=predict_path, pin_memory=pin_memory, persistent_workers=persistent_workers,
        )
        owner = type(self).__name__
        _check_policy(owner, on_bad_image)
        _check_classes(owner, classes)
        self.root = root
        self.on_bad_image = on_bad_image
        self.skipped_images: list[str] = []
        self._files = self._scan(Path(root).expanduser(), classes)
        auto_channels(self, channels, [path for path, _ in self._files["train"]])

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
                    raise DataError(f"{owner}: class folder {str(class_dir)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                    f"add images or remove the folder.")
                entries += [(path, class_dir.name) for path in images]
            files[split] = entries
        if ignored:
            rank_zero_warn(f"{owner}: ignored {len(ignored)} files that are not images: first {str(ignored[0])!r}.")
        return files

    def _load_pools(self) -> dict[str, ImagePool]:
        index = {name: i for i, name in enumerate(self._class_names)}
        pools = {}
        for split, entries in self._files.items():
            paths = [path for path, _ in entries]
            labels = np.array([index[name] for _, name in entries], dtype=np.int64)
            pools[split] = decode_pool(f"{type(self).__name__} ({split})", paths, labels, self.in_chans,
                                       self.on_bad_image, self.skipped_images)
        return pools


class CSVDataModule(BaseImageDataModule):
    """Images listed in a CSV: one row per image, a path column and a label column.

    Labels may be strings or integers; class names are the sorted distinct labels (integers in
    numeric order, named ``"0"``, ``"1"``...) unless ``classes`` fixes them. The rows are split by
    the fractions like one image folder.

    Args:
        csv_path: the CSV file.
        path_column: column of image paths, relative to ``root``.
        label_column: column of labels.
        root: folder the paths are relative to; default the CSV's folder.
        classes: class names in index order; every label must be one of them.
        on_bad_image: ``error`` or ``skip`` unreadable / missing images (see ``ImageFolderDataModule``).
        flips: whether a mirrored image keeps its label (see ``ImageFolderDataModule``).
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
        classes: list[str] | None = None,
        on_bad_image: OnBadImage = "error",
        flips: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
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
        self.flips_preserve_label = flips  # read by the base class when it checks the augmentations
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
            test_fraction=test_fraction, samples_per_class=samples_per_class, image_size=image_size,
            channels=channels, mean=mean, std=std, augmentations=augmentations, fill=fill,
            predict_path=predict_path, pin_memory=pin_memory, persistent_workers=persistent_workers,
        )
        owner = type(self).__name__
        _check_policy(owner, on_bad_image)
        _check_classes(owner, classes)
        self.csv_path = csv_path
        self.path_column = path_column
        self.label_column = label_column
        self.root = root
        self.on_bad_image = on_bad_image
        self.skipped_images: list[str] = []
        self._paths, self._labels = self._read(classes)
        auto_channels(self, channels, self._paths)

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

    def _load_pools(self) -> dict[str, ImagePool]:
        pool = decode_pool(type(self).__name__, self._paths, self._labels, self.in_chans, self.on_bad_image,
                           self.skipped_images)
        return {"train": pool}
