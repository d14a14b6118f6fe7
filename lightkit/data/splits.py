"""Seeded, stratified train / val / test splits and few-shot selection: pure numpy + sklearn."""

from __future__ import annotations

import math

import numpy as np

from lightkit.data.errors import DataError

__all__ = ["few_shot_indices", "stratified_split"]


def _count(fraction: float, n: int) -> int:
    # ceil like sklearn's float test_size; the round() keeps 0.2 * 1000 at 200, not 201.
    return math.ceil(round(fraction * n, 6)) if fraction > 0 else 0


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, where: str = "split"
) -> dict[str, np.ndarray]:
    """Seeded stratified train / val / test indices: the test split first, then val from the rest.

    Both fractions are of all ``len(labels)`` images (``ceil``, at least one image when > 0).
    Returns sorted index arrays ``{"train", "val", "test"}`` (empty where a fraction is 0).

    Raises:
        DataError: sklearn cannot stratify (a class with a single image, a split smaller than the
            number of classes, nothing left to train on).
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = len(labels)
    idx = np.arange(n)
    empty = np.zeros(0, dtype=np.int64)
    n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
    try:
        if n_test + n_val >= n:
            raise ValueError(f"{n_test} test + {n_val} val images leave no training image")
        rest, test = (train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
                      if n_test else (idx, empty))
        train, val = (train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=seed)
                      if n_val else (rest, empty))
    except ValueError as err:
        counts = np.bincount(labels) if n else np.zeros(1, dtype=int)
        present = counts[counts > 0]
        raise DataError(
            f"{where}: cannot split {n} images of {len(present)} classes (smallest class: "
            f"{int(present.min()) if len(present) else 0} images) stratified with test_fraction={test_fraction}, "
            f"val_fraction={val_fraction}: {err}. Add images, or change the fractions so that every split "
            f"holds at least one image per class (or provide val/ and test/ folders)."
        ) from err
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def few_shot_indices(
    labels: np.ndarray, indices: np.ndarray, k: int, seed: int, class_names: list[str], where: str = "data"
) -> np.ndarray:
    """The first ``k`` indices of each class after a seeded shuffle of ``indices`` (sorted).

    Raises:
        DataError: a class has fewer than ``k`` images among ``indices``.
    """
    order = np.asarray(indices)[np.random.default_rng(seed).permutation(len(indices))]
    chosen, short = [], []
    for c, name in enumerate(class_names):
        members = order[labels[order] == c]
        if len(members) < k:
            short.append(f"{name!r} ({len(members)})")
        chosen.append(members[:k])
    if short:
        raise DataError(
            f"{where}: samples_per_class={k} but the train split has fewer images for classes "
            f"{', '.join(short[:5])}{' ...' if len(short) > 5 else ''}; lower samples_per_class, lower "
            f"val_fraction / test_fraction, or add images."
        )
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
