"""A floor to beat: logistic regression on the raw, downsampled pixels of the same train split.

No tool we know of tells a user that a linear model on pixels beats their network. lightkit trains
one on the data module's own split (a few seconds: at most ``max_train`` images, ``size`` x ``size``
pixels), scores it on the same test images as the network, and the CLI prints both side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MIRROR_KEPT", "FlipDecision", "PixelBaseline", "below_baseline_message", "mirror_test", "pixel_baseline",
           "pixel_features"]


@dataclass
class PixelBaseline:
    """Result of :func:`pixel_baseline`: test accuracy and what it was fitted on."""

    test_acc: float
    val_acc: float | None
    C: float
    size: int
    n_train: int
    n_test: int
    seconds: float
    n_test_total: int | None = None  # the test split's size when ``n_test`` is a subset of it (``max_eval``)
    skipped: int = 0  # streamed files that could not be decoded, left out as training leaves them out


def pixel_features(images: np.ndarray | Iterable[np.ndarray | torch.Tensor], size: int) -> np.ndarray:
    """``uint8`` HWC images (one array, a list of sizes, or any iterable; float CHW tensors pass as they are)
    -> ``(N, C*size*size)`` floats in [0, 1].

    Images are resized with area averaging (antialiased). Each image is reduced as soon as it is read,
    so a lazy sequence (a streaming folder) is never held decoded in memory.
    """
    rows = [_pool(img, size).flatten().numpy() for img in images]
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def _pool(img: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    if not isinstance(img, torch.Tensor):  # uint8 HWC -> float CHW in [0, 1]
        img = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0  # a copy: decoded arrays are read-only
    return F.adaptive_avg_pool2d(img[None], (size, size))[0]


def _read(images: Iterable[np.ndarray], size: int, skipped: list[int] | None = None) -> Iterable[np.ndarray]:
    """The images one at a time; a streaming folder's files decoded at reduced scale where the format allows
    (JPEG ``draft``: both sides stay >= ``size``). A streamed file that cannot be decoded (a truncated JPEG
    passes the header scan) is left out and its position appended to ``skipped``, as training skips it."""
    from lightkit.data.errors import BadImageError
    from lightkit.data.images import decode_image
    from lightkit.data.stream import LazyImages

    if not (isinstance(images, _Lazy) and isinstance(images.images, LazyImages)):
        return images
    files = images.images

    def decoded() -> Iterator[np.ndarray]:
        for position, i in enumerate(images.idx):
            try:
                yield decode_image(files.paths[int(i)], files.channels, draft=size)
            except BadImageError:
                if skipped is None:
                    raise
                skipped.append(position)

    return decoded()


def pixel_baseline(datamodule: Any, size: int = 16, max_train: int = 5000, seed: int = 0,
                   grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0), max_eval: int = 2000) -> PixelBaseline:
    """Fit ``LogisticRegression`` on the data module's train split and score its test split.

    ``C`` is chosen on the validation split (when there is one) from ``grid``; pixels are
    standardised. ``size`` is capped at the images' own side, so 8x8 digits stay 8x8.

    Args:
        datamodule: a lightkit image data module (its split, few-shot selection and classes).
        size: side of the downsampled images in pixels.
        max_train: at most this many train images (a seeded subset), so the fit takes seconds.
        seed: seed of the subsets.
        grid: inverse regularisation strengths tried.
        max_eval: at most this many validation and test images each (seeded subsets): on a large
            streaming folder the floor costs seconds, not a decode of every held-out file.
            ``n_test`` of the result says how many were scored.

    Raises:
        ValueError: ``size`` < 1, ``max_train`` or ``max_eval`` < 2, or a data module without splits and images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if size < 1 or max_train < 2 or max_eval < 2:
        raise ValueError(f"pixel_baseline: size={size} must be >= 1, max_train={max_train} and "
                         f"max_eval={max_eval} >= 2.")
    if not (hasattr(datamodule, "_get_splits") and hasattr(datamodule, "_get_pools")):
        raise ValueError(f"pixel_baseline: {type(datamodule).__name__} has no image splits; use a lightkit image "
                         f"data module (folder, CSV or embedded).")
    t0 = time.perf_counter()
    pools, splits = datamodule._get_pools(), datamodule._get_splits()  # noqa: SLF001 - same package

    def split(name: str, limit: int) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        key, idx = splits[name]
        idx = np.asarray(idx)
        if len(idx) > limit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
        return _images_at(pools[key], idx)

    data = {name: split(name, max_train if name == "train" else max_eval) for name in ("train", "val", "test")}
    test_total = len(splits["test"][1])
    (_, y_train), (_, y_val), (_, y_test) = data["train"], data["val"], data["test"]
    if len(y_test) == 0 or len(np.unique(y_train)) < 2:
        raise ValueError("pixel_baseline: needs a test split and at least two classes in train.")
    # The side comes from the train images (a tiny held-out file shrinks nothing), never above their own.
    x_train = data["train"][0]
    skipped: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    # Unreadable streamed files: left out where the data module leaves them out (on_bad_image: skip).
    skip = getattr(datamodule, "on_bad_image", "error") == "skip"
    if isinstance(x_train, np.ndarray):  # one image size, in memory
        side = min(size, *x_train.shape[1:3])
        train = pixel_features(x_train, side)
    else:  # several sizes, or streamed: each image pooled once to its own side (a few hundred floats kept)
        read = _read(x_train, size, skipped["train"] if skip else None)
        small = [_pool(img, min(size, *img.shape[:2])) for img in read]
        side = min(t.shape[-1] for t in small)
        train = pixel_features(small, side)
    features = {"train": train, **{name: pixel_features(_read(data[name][0], size, skipped[name] if skip else None),
                                                        side) for name in ("val", "test")}}
    y_train, y_val, y_test = (np.delete(y, skipped[name]) for name, y in
                              (("train", y_train), ("val", y_val), ("test", y_test)))
    if len(y_test) == 0 or len(np.unique(y_train)) < 2:
        raise ValueError("pixel_baseline: too few readable images: needs a test image and two classes in train.")

    def fit(c: float) -> Any:
        # tol 1e-3: the floor to two decimals in seconds (sklearn's 1e-4 took 12-22 s per C on 5000 images
        # of 768 pixels; the validation accuracy moved by <= 0.012).
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, tol=1e-3))
        return model.fit(features["train"], y_train)

    best_c, val_acc = grid[len(grid) // 2], None
    if len(y_val):
        scores = [(float(fit(c).score(features["val"], y_val)), -abs(np.log10(c)), c) for c in grid]
        val_acc, _, best_c = max(scores)
    model = fit(best_c)
    return PixelBaseline(test_acc=float(model.score(features["test"], y_test)), val_acc=val_acc, C=best_c,
                         size=side, n_train=len(y_train), n_test=len(y_test), seconds=time.perf_counter() - t0,
                         n_test_total=test_total if test_total > len(y_test) else None,
                         skipped=sum(map(len, skipped.values())))


class _Lazy(Sequence):
    """``images[idx]`` of a list or a streaming pool, read one image at a time."""

    def __init__(self, images: Sequence[np.ndarray], idx: np.ndarray) -> None:
        self.images, self.idx = images, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.images[int(self.idx[i])]


def _images_at(pool: Any, idx: np.ndarray) -> tuple[np.ndarray | Sequence[np.ndarray], np.ndarray]:
    """A pool's images and labels at ``idx``: sliced when in memory, read lazily (one file at a time) when not."""
    images = pool.images[idx] if isinstance(pool.images, np.ndarray) else _Lazy(pool.images, idx)
    return images, np.asarray(pool.labels)[idx]


def below_baseline_message(model_acc: float, baseline: PixelBaseline, steps: int | None = None) -> str | None:
    """One line when the network is below the pixel baseline on the test split, with the likely causes.

    When the baseline scored a subset of the test split (``n_test_total``), the network must be below it by
    more than two standard errors of the subset's accuracy: sampling noise is not a verdict.
    """
    margin = 0.0
    if baseline.n_test_total and baseline.n_test:
        p = baseline.test_acc
        margin = 2 * (p * (1 - p) / baseline.n_test) ** 0.5
    if model_acc >= baseline.test_acc - margin:
        return None
    budget = f"too few optimizer steps ({steps})" if steps is not None and steps < 300 else "too short a budget"
    return (f"lightkit: the model's test accuracy {100 * model_acc:.2f} % is below logistic regression on "
            f"{baseline.size}x{baseline.size} pixels ({100 * baseline.test_acc:.2f} %). Likely causes: {budget}, "
            f"an LR far from the range test's (python cli.py lr_find), the wrong channels or weights for this data, "
            f"augmentation too strong for the image size. Try configs/folder.yaml.")


@dataclass
class FlipDecision:
    """Whether mirrored images keep their labels, judged by a linear model on pixels (:func:`mirror_test`).

    ``plain`` / ``mirrored``: cross-validated balanced accuracy (the mean of the per-class recalls, so a
    model that predicts the largest class scores chance, ``1 / classes``) of logistic regression on the
    train and validation images as they are and mirrored left-right; ``kept``: the share of its skill
    above chance that survives the mirror (``(mirrored - chance) / (plain - chance)``; None when the model
    has too little skill to tell, or when the test could not run: ``reason`` says why)."""

    flips: bool
    plain: float
    mirrored: float
    chance: float
    kept: float | None
    n_images: int
    seconds: float
    reason: str | None = None

    def describe(self) -> str:
        if self.reason is not None:
            return f"{self.reason}, so mirroring cannot be judged: flips stay off"
        if self.kept is None:
            return (f"a linear model on pixels is near chance (balanced accuracy {100 * self.plain:.0f} %, chance "
                    f"{100 * self.chance:.0f} %), so mirroring cannot be judged: flips stay off")
        return (f"a linear model on pixels keeps {100 * self.kept:.0f} % of its skill on mirrored images "
                f"(balanced accuracy {100 * self.plain:.0f} % -> {100 * self.mirrored:.0f} %, chance "
                f"{100 * self.chance:.0f} %; {'>=' if self.flips else '<'} {100 * MIRROR_KEPT:.0f} % -> flips "
                f"{'on' if self.flips else 'off'})")


# Measured on package-bundled folders (RESULTS "Flips decided from the data"): digits keep 27-42 % of the
# linear model's skill when mirrored; faces, photo patches and textures 92-106 % (one texture split 51 %).
MIRROR_KEPT = 0.65
_MIN_SKILL = 0.1


def _stratified_subset(labels: np.ndarray, idx: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """About ``cap`` of ``idx`` (at most ``cap`` plus one per class for rounding), each class in proportion
    and with at least 2 (or all) of its images; with more than ``cap / 2`` classes, a seeded ``cap / 2`` of
    the classes, 2 images each."""
    if len(idx) <= cap:
        return idx
    classes = np.unique(labels[idx])
    if 2 * len(classes) > cap:
        classes = np.sort(rng.choice(classes, max(cap // 2, 2), replace=False))
    chosen = idx[np.isin(labels[idx], classes)]
    out = []
    for c in classes:
        members = chosen[labels[chosen] == c]
        take = min(len(members), max(2, round(cap * len(members) / max(len(chosen), 1))))
        out.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(out))


def mirror_test(datamodule: Any, size: int = 8, max_images: int = 2000, seed: int = 0) -> FlipDecision:
    """Do mirrored images keep their labels? Logistic regression on the downsampled pixels of the train and
    validation splits (never test), scored by stratified k-fold on the images as they are and mirrored.

    Digits and text lose most of the model's skill when mirrored; faces, textures and photos of
    objects keep most of it. Flips are judged label-preserving when at least ``MIRROR_KEPT`` of the
    skill above chance survives; a model within ``_MIN_SKILL`` of chance cannot tell (flips off).
    Skill is balanced accuracy, so a skewed folder does not pass for a mirror-proof one. Classes with
    fewer than 2 images are left out of the test (``reason`` when fewer than 2 classes remain).

    Args:
        datamodule: a lightkit file image data module (its pools and splits).
        size: side of the pooled images.
        max_images: at most about this many images (a seeded subset, stratified by class), so the
            test takes seconds; only those are read on a streaming folder.
        seed: seed of the subset and the folds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    pools, splits = datamodule._get_pools(), datamodule._get_splits()  # noqa: SLF001 - same package
    skip = getattr(datamodule, "on_bad_image", "error") == "skip"
    pooled: list[torch.Tensor] = []
    labels: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for name in ("train", "val"):
        key, idx = splits[name]
        pool = pools[key]
        pool_labels = np.asarray(pool.labels)
        idx = _stratified_subset(pool_labels, np.asarray(idx, dtype=np.int64), max_images // 2, rng)
        images, idx_labels = _images_at(pool, idx)
        skipped: list[int] = []
        pooled += [_pool(img, size) for img in _read(images, size, skipped if skip else None)]
        labels.append(np.delete(idx_labels, skipped))
    y = np.concatenate(labels)
    classes, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, classes[counts >= 2])
    if len(np.unique(y[keep])) < 2:
        names = list(getattr(datamodule, "class_names", None) or [])
        few = [names[int(c)] if int(c) < len(names) else str(int(c)) for c in classes[counts < 2]]
        reason = f"the train and validation images hold {len(classes)} class(es)"
        if few:
            listed = ", ".join(few[:5]) + (", ..." if len(few) > 5 else "")
            reason += f", {len(few)} with fewer than 2 images ({listed})"
        return FlipDecision(False, float("nan"), float("nan"), float("nan"), None, len(y),
                            time.perf_counter() - t0, reason)
    y = y[keep]
    chance = 1.0 / len(np.unique(y))
    folds = int(min(5, np.unique(y, return_counts=True)[1].min()))
    # every image was pooled to size x size as it was read, whatever its own size
    images_kept = torch.stack([t for t, k in zip(pooled, keep, strict=True) if k])
    plain, mirrored = images_kept.flatten(1).numpy(), images_kept.flip(-1).flatten(1).numpy()
    pred_plain, pred_mirrored = np.empty_like(y), np.empty_like(y)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(plain, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, tol=1e-3))
        model.fit(plain[train], y[train])
        pred_plain[test], pred_mirrored[test] = model.predict(plain[test]), model.predict(mirrored[test])
    # Python floats and bools (older scikit-learn returns numpy scalars): the decision goes into checkpoints,
    # which torch.load(weights_only=True) must read.
    acc, acc_mirrored = float(balanced_accuracy_score(y, pred_plain)), float(balanced_accuracy_score(y, pred_mirrored))
    if acc - chance < _MIN_SKILL:
        return FlipDecision(False, acc, acc_mirrored, chance, None, len(y), time.perf_counter() - t0)
    kept = (acc_mirrored - chance) / (acc - chance)
    return FlipDecision(bool(kept >= MIRROR_KEPT), acc, acc_mirrored, chance, kept, len(y), time.perf_counter() - t0)
