"""Batch-level mixing as pure torch functions: MixUp, CutMix and smoothed one-hot targets.

Cutout is the ``cutout`` augmentation of the data pipeline (albumentations' CoarseDropout, per image), not a
batch function here.

Randomness is injectable everywhere (``lam``, ``index``, ``center``, ``generator``) so that tests can
compare against a hand-computed oracle and a callback can own a resumable generator. The functions
never modify their inputs. Targets come back as soft targets (N, C) float, which
``F.cross_entropy`` accepts directly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["cutmix_batch", "cutmix_box", "mixup_batch", "one_hot_smooth", "sample_lam"]


def one_hot_smooth(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Soft targets with label smoothing (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567).

    Each row is ``(1 - smoothing) * one_hot + smoothing / num_classes``, so it sums to 1; this matches
    ``F.cross_entropy(label_smoothing=smoothing)``.

    Args:
        y: class indices (N,) of an integer dtype, or soft targets (N, num_classes) (smoothed again).
        num_classes: number of classes C.
        smoothing: probability mass spread uniformly over all classes, in [0, 1).

    Returns:
        Float tensor (N, C); float32 unless ``y`` is already a floating soft target.

    Raises:
        ValueError: ``smoothing`` outside [0, 1), or ``y`` not (N,) / (N, num_classes).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"one_hot_smooth: smoothing={smoothing} must be in [0, 1); 0.1 is a common choice.")
    if y.ndim == 1:
        soft = torch.nn.functional.one_hot(y.long(), num_classes).float()
    elif y.ndim == 2 and y.shape[1] == num_classes:
        soft = y if y.is_floating_point() else y.float()
    else:
        raise ValueError(
            f"one_hot_smooth: targets of shape {tuple(y.shape)}; give class indices (N,) or soft targets (N, "
            f"{num_classes})."
        )
    if smoothing:
        soft = soft * (1.0 - smoothing) + smoothing / num_classes
    return soft


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw ``lam ~ Beta(alpha, alpha)`` reproducibly from a torch generator.

    torch has no Beta sampler that takes a generator, so one 63-bit seed is drawn from ``generator``
    (or the global torch RNG) and handed to numpy's Beta sampler.

    Raises:
        ValueError: ``alpha`` is not positive.
    """
    if not alpha > 0:
        raise ValueError(f"sample_lam: alpha={alpha} must be > 0 (Beta(alpha, alpha)); pass lam= to fix the "
                         "mix instead.")
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _index(n: int, index: Tensor | None, device: torch.device, generator: torch.Generator | None) -> Tensor:
    if index is None:
        return torch.randperm(n, generator=generator).to(device)
    if index.shape != (n,):
        raise ValueError(f"mixing: index of shape {tuple(index.shape)} for a batch of {n}; give a "
                         f"permutation of shape ({n},).")
    return index.to(device)


def _check_lam(lam: float) -> float:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixing: lam={lam} must be in [0, 1] (the weight of the original sample).")
    return float(lam)


def mixup_batch(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    alpha: float = 0.2,
    lam: float | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
    smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, float, Tensor]:
    """MixUp (Zhang et al. 2018, https://arxiv.org/abs/1710.09412): convex mix of a batch with a permutation.

    ``x_mixed = lam * x + (1 - lam) * x[index]`` and likewise for the one-hot (optionally smoothed)
    targets. A batch of one mixes with itself (a no-op); odd sizes need nothing special.

    Args:
        x: inputs (N, ...), floating point.
        y: class indices (N,) or soft targets (N, num_classes).
        num_classes: number of classes C.
        alpha: Beta(alpha, alpha) concentration; small values (0.2) keep most mixes near one sample.
        lam: weight of the original sample in [0, 1]; drawn from Beta(alpha, alpha) when ``None``.
        index: the partner of each sample (N,); a random permutation when ``None``.
        generator: torch generator for ``lam`` and ``index``.
        smoothing: label smoothing applied to the targets before mixing.

    Returns:
        ``(x_mixed, y_soft, lam, index)`` with ``y_soft`` (N, C) float.

    Raises:
        ValueError: ``alpha`` not positive (when ``lam`` is drawn), ``lam`` outside [0, 1], bad ``index``.
    """
    lam = _check_lam(sample_lam(alpha, generator) if lam is None else lam)
    index = _index(x.shape[0], index, x.device, generator)
    soft = one_hot_smooth(y, num_classes, smoothing).to(x.dtype if x.is_floating_point() else torch.float32)
    x_mixed = x * lam + x[index] * (1.0 - lam)
    y_soft = soft * lam + soft[index] * (1.0 - lam)
    return x_mixed, y_soft, lam, index


def cutmix_box(
    height: int,
    width: int,
    lam: float,
    center: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """The CutMix box ``(y0, y1, x0, x1)`` covering about ``1 - lam`` of the image, clipped to it.

    The box has sides ``sqrt(1 - lam) * (H, W)`` around a uniformly drawn centre (as in the paper's
    code), so near the border it is clipped and covers less; :func:`cutmix_batch` corrects ``lam``.

    Args:
        height: image height H in pixels.
        width: image width W in pixels.
        lam: target weight of the original image in [0, 1].
        center: ``(cy, cx)`` in pixels; drawn uniformly from the image when ``None``.
        generator: torch generator for the centre.
    """
    lam = _check_lam(lam)
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    if center is None:
        cy = int(torch.randint(0, height, (1,), generator=generator).item())
        cx = int(torch.randint(0, width, (1,), generator=generator).item())
    else:
        cy, cx = center
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return y0, y1, x0, x1


def cutmix_batch(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    alpha: float = 1.0,
    lam: float | None = None,
    index: Tensor | None = None,
    generator: torch.Generator | None = None,
    center: tuple[int, int] | None = None,
    smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, float, Tensor]:
    """CutMix (Yun et al. 2019, https://arxiv.org/abs/1905.04899): paste a box from a partner image.

    One box for the whole batch; pixels inside it come from ``x[index]``. The returned ``lam`` is the
    fraction of the image left original (corrected to the clipped box area), and the targets mix
    with that ``lam``.

    Args:
        x: images (N, C, H, W).
        y: class indices (N,) or soft targets (N, num_classes).
        num_classes: number of classes.
        alpha: Beta(alpha, alpha) concentration for the target ``lam`` (the paper uses 1.0: uniform).
        lam: target weight of the original image in [0, 1]; drawn when ``None``.
        index: the partner of each sample (N,); a random permutation when ``None``.
        generator: torch generator for ``lam``, ``index`` and the box centre.
        center: box centre ``(cy, cx)`` in pixels; drawn uniformly when ``None``.
        smoothing: label smoothing applied to the targets before mixing.

    Returns:
        ``(x_mixed, y_soft, lam, index)``; ``lam = 1 - box_area / (H * W)``.

    Raises:
        ValueError: ``x`` not 4-D, ``alpha`` not positive (when ``lam`` is drawn), ``lam`` outside
            [0, 1], bad ``index``.
    """
    if x.ndim != 4:
        raise ValueError(f"cutmix_batch: x of shape {tuple(x.shape)}; give images (N, C, H, W).")
    lam = _check_lam(sample_lam(alpha, generator) if lam is None else lam)
    index = _index(x.shape[0], index, x.device, generator)
    height, width = x.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(height, width, lam, center, generator)
    x_mixed = x.clone()
    x_mixed[:, :, y0:y1, x0:x1] = x[index, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    soft = one_hot_smooth(y, num_classes, smoothing).to(x.dtype if x.is_floating_point() else torch.float32)
    y_soft = soft * lam + soft[index] * (1.0 - lam)
    return x_mixed, y_soft, lam, index
