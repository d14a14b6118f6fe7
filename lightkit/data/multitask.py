"""Data modules with several targets per image, for :class:`lightkit.models.multitask.MultiTaskClassifier`.

Batches are ``(x, label, aux_1, aux_2, ...)``: the first target is the data module's class label (the
one ``num_classes`` / ``class_names`` describe, stratified splits and few-shot selection use, and the
CLI links into the model as the main task), then one tensor per auxiliary column, in ``task_names``
order. Class columns are ``int64``, real-valued ones ``float32``.

- :class:`MultiTaskCSVDataModule`: a CSV with a path column, a label column and auxiliary columns.
- :class:`DigitsMultiTaskDataModule`: sklearn's digits with auxiliary targets that come from real
  structure: parity, ``digit >= 5`` and the angle of a known random rotation (the self-supervised
  rotation target of Gidaris et al. 2018, https://arxiv.org/abs/1803.07728, as a regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from lightkit.data.base import ImagePool
from lightkit.data.embedded import DigitsDataModule
from lightkit.data.errors import DataError
from lightkit.data.folder import CSVDataModule

__all__ = ["DigitsMultiTaskDataModule", "MultiTaskCSVDataModule", "rotate_images"]


def rotate_images(x: Tensor, degrees: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """Rotate each image of an (N, C, H, W) batch about its centre, counter-clockwise by ``degrees[i]``.

    Bilinear sampling; the area rotated in from outside the image is ``fill`` (a scalar or a (1, C, 1, 1)
    per-channel value, e.g. the normalised black level ``-mean / std``).
    """
    theta = torch.deg2rad(degrees.to(x.dtype))
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps each output pixel to the input point it samples; in its (x right, y down) frame a
    # counter-clockwise turn on screen samples the input at R(theta) p with this sign of sin.
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return F.grid_sample(x - fill_t, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill_t


class _WithTargets(Dataset):
    """An ``(x, label)`` dataset (the augmented train split) with further target tensors appended."""

    def __init__(self, base: Dataset, extra: list[Tensor]) -> None:
        self.base = base
        self.extra = extra

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, ...] | None:
        sample = self.base[key]  # a streaming split is read with (epoch, index) keys
        if sample is None:  # an unreadable image under on_bad_image: skip (streaming)
            return None
        index = key[1] if isinstance(key, tuple) else key
        return (*sample, *(t[index] for t in self.extra))


class _AuxTargets:
    """Mixin for :class:`~lightkit.data.base.BaseImageDataModule`: per-pool auxiliary target arrays
    (``self._aux[pool][column]``, aligned with the pool's images) appended to every split's batches."""

    _aux: dict[str, dict[str, np.ndarray]]
    _label_name: str

    @property
    def aux_names(self) -> list[str]:
        """Auxiliary target columns, in batch order after the label."""
        raise NotImplementedError

    @property
    def task_names(self) -> list[str]:
        """Names of the batch targets: the label column, then the auxiliary columns."""
        return [self._label_name, *self.aux_names]

    def _build(self, split: str) -> None:
        super()._build(split)  # type: ignore[misc]
        key, idx = self._get_splits()[split]  # type: ignore[attr-defined]
        extra = [torch.from_numpy(np.ascontiguousarray(self._aux[key][name][idx])) for name in self.aux_names]
        dataset = self._datasets[split]  # type: ignore[attr-defined]
        self._datasets[split] = (TensorDataset(*dataset.tensors, *extra) if isinstance(dataset, TensorDataset)  # type: ignore[attr-defined]
                                 else _WithTargets(dataset, extra))


def _column_values(owner: str, frame: Any, column: str, csv: str) -> tuple[np.ndarray, list[str] | None]:
    """A column as int64 (integers, or string categories -> sorted index) or float32, and its class names."""
    import pandas as pd

    raw = frame[column]
    missing = np.flatnonzero(raw.isna().to_numpy())
    if len(missing):
        raise DataError(f"{owner}: {len(missing)} rows of {csv!r} have no {column!r} (first: data row "
                        f"{missing[0] + 1}); fill them in or delete the rows.")
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        if np.all(np.mod(values, 1) == 0):
            return values.astype(np.int64), None
        return values.astype(np.float32), None
    names = sorted({str(v) for v in raw})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(v)] for v in raw], dtype=np.int64), names


class MultiTaskCSVDataModule(_AuxTargets, CSVDataModule):
    """A CSV with a path column, a label column (the main task) and auxiliary target columns.

    Auxiliary columns of integers (class indices, 0/1 for binary tasks) come as ``int64``, other numbers
    as ``float32`` (regression targets), strings as ``int64`` indices into their sorted distinct values
    (``task_classes[column]`` names them). Splits and few-shot selection stratify by the label column.

    Args:
        csv_path: the CSV file.
        aux_columns: the auxiliary target columns, in batch order after the label.
        path_column ... persistent_workers: see :class:`~lightkit.data.CSVDataModule`.

    Raises:
        DataError: no auxiliary column, a column that is missing, repeated or is the path / label
            column, or an empty cell.
    """

    def __init__(self, csv_path: str, aux_columns: list[str], **kwargs: Any) -> None:
        owner = type(self).__name__
        aux = list(aux_columns)
        if not aux:
            raise DataError(f"{owner}: aux_columns=[] names no auxiliary target; list them, or use CSVDataModule "
                            f"for a single label.")
        self._aux_columns = aux
        super().__init__(csv_path=csv_path, **kwargs)
        clash = [c for c in aux if c in (self.path_column, self.label_column) or aux.count(c) > 1]
        if clash:
            raise DataError(f"{owner}: aux_columns={aux} repeats {clash[0]!r} (or it is the path / label column); "
                            f"list each auxiliary column once.")
        self._label_name = self.label_column

    @property
    def aux_names(self) -> list[str]:
        return list(self._aux_columns)

    @property
    def task_num_classes(self) -> dict[str, int]:
        """Classes of the label column and of each string auxiliary column."""
        return {self._label_name: self.num_classes, **{c: len(n) for c, n in self.task_classes.items()}}

    def _read(self, classes: list[str] | None) -> tuple[list, np.ndarray]:
        import pandas as pd

        paths, labels = super()._read(classes)
        owner = type(self).__name__
        frame = pd.read_csv(self.csv_path)
        absent = [c for c in self._aux_columns if c not in frame.columns]
        if absent:
            raise DataError(f"{owner}: aux_columns {absent} are not columns of {self.csv_path!r} (columns: "
                            f"{list(frame.columns)}); name existing columns.")
        self._aux_rows: dict[str, np.ndarray] = {}
        self.task_classes: dict[str, list[str]] = {}
        for column in self._aux_columns:
            values, names = _column_values(owner, frame, column, str(self.csv_path))
            self._aux_rows[column] = values
            if names is not None:
                self.task_classes[column] = names
        return paths, labels

    def _load_pools(self) -> dict[str, ImagePool]:
        rows = np.arange(len(self._paths), dtype=np.int64)
        # decode_pool filters the labels it is given by the readable images: given row numbers, it says which
        # rows survived, so the label and every auxiliary column are filtered alike.
        pool = self._pool(type(self).__name__, self._paths, rows)
        kept = pool.labels
        pool.labels = self._labels[kept]
        self._aux = {"train": {c: v[kept] for c, v in self._aux_rows.items()}}
        return {"train": pool}


class DigitsMultiTaskDataModule(_AuxTargets, DigitsDataModule):
    """sklearn's digits with auxiliary tasks: ``parity`` (odd = 1), ``ge5`` (digit >= 5 = 1) and ``angle``.

    Every image is rotated by a known random angle in ``[-max_rotation, max_rotation]`` degrees
    (counter-clockwise positive) at the model's input size, and ``angle`` is that angle divided by
    ``max_rotation`` (in [-1, 1]). Train batches get fresh angles each step (an augmentation whose
    parameter is the target), drawn from a generator seeded by ``seed``, the global batch index and the
    rank, so a resumed run sees the same angles as a straight one; val and test images are rotated once,
    by seeded angles. Batches: ``(x, digit, parity, ge5, angle)``.

    Args:
        max_rotation: largest rotation in degrees, in (0, 180].
        batch_size ... persistent_workers: see :class:`~lightkit.data.base.BaseImageDataModule`.

    Raises:
        DataError: ``max_rotation`` outside (0, 180].
    """

    def __init__(self, max_rotation: float = 30.0, **kwargs: Any) -> None:
        if not 0.0 < max_rotation <= 180.0:
            raise DataError(f"{type(self).__name__}: max_rotation={max_rotation} must be in (0, 180] degrees.")
        super().__init__(**kwargs)
        self.max_rotation = float(max_rotation)
        self._label_name = "digit"

    @property
    def aux_names(self) -> list[str]:
        return ["parity", "ge5", "angle"]

    @property
    def task_num_classes(self) -> dict[str, int]:
        return {"digit": 10}

    def _load_pools(self) -> dict[str, ImagePool]:
        pools = super()._load_pools()
        labels = pools["train"].labels
        self._aux = {"train": {"parity": labels % 2, "ge5": (labels >= 5).astype(np.int64),
                               "angle": np.zeros(len(labels), dtype=np.float32)}}
        return pools

    def _background(self, device: torch.device) -> Tensor:
        mean = torch.tensor(self.preprocessing["mean"], dtype=torch.float32, device=device)
        std = torch.tensor(self.preprocessing["std"], dtype=torch.float32, device=device)
        return (-mean / std).view(1, -1, 1, 1)  # a black pixel, normalised

    def _angles(self, n: int, seed: list[int]) -> Tensor:
        rng = np.random.default_rng([self.seed, *seed])
        return torch.from_numpy(rng.uniform(-self.max_rotation, self.max_rotation, n).astype(np.float32))

    def _build(self, split: str) -> None:
        super()._build(split)
        dataset = self._datasets[split]
        if split == "train" or not isinstance(dataset, TensorDataset) or len(dataset) == 0:
            return  # train batches are rotated per step in on_after_batch_transfer
        x, *targets = dataset.tensors
        degrees = self._angles(len(x), [1 if split == "val" else 2])
        x = rotate_images(x, degrees, self._background(x.device))
        targets[-1] = degrees / self.max_rotation
        self._datasets[split] = TensorDataset(x, *targets)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Rotate a train batch by fresh seeded angles and put the angles in its ``angle`` target."""
        trainer = self.trainer
        if trainer is None or not trainer.training or not isinstance(batch, (list, tuple)) or len(batch) != 5:
            return batch
        step = trainer.fit_loop.total_batch_idx + 1  # restored from a checkpoint, so resume draws the same angles
        degrees = self._angles(len(batch[0]), [0, step, trainer.global_rank]).to(batch[0].device)
        x = rotate_images(batch[0], degrees, self._background(batch[0].device))
        return type(batch)([x, *batch[1:4], (degrees / self.max_rotation).to(batch[4].dtype)])
