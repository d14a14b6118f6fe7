"""A floor to beat: logistic regression on the raw, downsampled pixels of the same train split.

No tool we know of tells a user that a linear model on pixels beats their network. lightkit trains
one on the data module's own split (a few seconds: at most ``max_train`` images, ``size`` x ``size``
pixels), scores it on the same test images as the network, and the CLI prints both side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PixelBaseline", "below_baseline_message", "pixel_baseline", "pixel_features"]


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


def pixel_features(images: np.ndarray | list[np.ndarray], size: int) -> np.ndarray:
    """``uint8`` HWC images (one array or a list of sizes) -> ``(N, C*size*size)`` floats in [0, 1].

    Images are resized with area averaging (antialiased), never above their own size.
    """
    rows = []
    for img in (images if isinstance(images, list) else list(images)):
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        rows.append(F.adaptive_avg_pool2d(t, (size, size)).flatten().numpy())
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def pixel_baseline(datamodule: Any, size: int = 16, max_train: int = 5000, seed: int = 0,
                   grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> PixelBaseline:
    """Fit ``LogisticRegression`` on the data module's train split and score its test split.

    ``C`` is chosen on the validation split (when there is one) from ``grid``; pixels are
    standardised. ``size`` is capped at the images' own side, so 8x8 digits stay 8x8.

    Args:
        datamodule: a lightkit image data module (its split, few-shot selection and classes).
        size: side of the downsampled images in pixels.
        max_train: at most this many train images (a seeded subset), so the fit takes seconds.
        seed: seed of that subset.
        grid: inverse regularisation strengths tried.

    Raises:
        ValueError: ``size`` < 1, ``max_train`` < 2, or a data module without splits and images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if size < 1 or max_train < 2:
        raise ValueError(f"pixel_baseline: size={size} must be >= 1 and max_train={max_train} >= 2.")
    if not (hasattr(datamodule, "_get_splits") and hasattr(datamodule, "_get_pools")):
        raise ValueError(f"pixel_baseline: {type(datamodule).__name__} has no image splits; use a lightkit image "
                         f"data module (folder, CSV or embedded).")
    t0 = time.perf_counter()
    pools, splits = datamodule._get_pools(), datamodule._get_splits()  # noqa: SLF001 - same package

    def split(name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        key, idx = splits[name]
        idx = np.asarray(idx)
        if limit is not None and len(idx) > limit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
        pool = pools[key]
        images = pool.images[idx] if isinstance(pool.images, np.ndarray) else [pool.images[i] for i in idx]
        return images, np.asarray(pool.labels)[idx]

    x_train, y_train = split("train", max_train)
    side = min(size, *(min(img.shape[:2]) for img in (x_train if isinstance(x_train, list) else x_train[:1])))
    x_val, y_val = split("val")
    x_test, y_test = split("test")
    if len(y_test) == 0 or len(np.unique(y_train)) < 2:
        raise ValueError("pixel_baseline: needs a test split and at least two classes in train.")
    features = {name: pixel_features(x, side) for name, x in (("train", x_train), ("val", x_val), ("test", x_test))}

    def fit(c: float) -> Any:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        return model.fit(features["train"], y_train)

    best_c, val_acc = grid[len(grid) // 2], None
    if len(y_val):
        scores = [(float(fit(c).score(features["val"], y_val)), -abs(np.log10(c)), c) for c in grid]
        val_acc, _, best_c = max(scores)
    model = fit(best_c)
    return PixelBaseline(test_acc=float(model.score(features["test"], y_test)), val_acc=val_acc, C=best_c,
                         size=side, n_train=len(y_train), n_test=len(y_test), seconds=time.perf_counter() - t0)


def below_baseline_message(model_acc: float, baseline: PixelBaseline, steps: int | None = None) -> str | None:
    """One line when the network is below the pixel baseline on the test split, with the likely causes."""
    if model_acc >= baseline.test_acc:
        return None
    budget = f"too few optimizer steps ({steps})" if steps is not None and steps < 300 else "too short a budget"
    return (f"lightkit: the model's test accuracy {100 * model_acc:.2f} % is below logistic regression on "
            f"{baseline.size}x{baseline.size} pixels ({100 * baseline.test_acc:.2f} %). Likely causes: {budget}, "
            f"an LR far from the range test's (python cli.py lr_find), the wrong channels or weights for this data, "
            f"augmentation too strong for the image size. Try configs/folder.yaml.")
