"""Test-time augmentation as pure torch functions: deterministic views of a batch and their mean softmax.

No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["tta_probs", "tta_view_names", "tta_views"]


def _check(fn: str, shifts: int, crop: float | None) -> None:
    if shifts < 0:
        raise ValueError(f"{fn}: shifts={shifts} must be >= 0 pixels (0: no shifted views).")
    if crop is not None and not 0.0 < crop < 1.0:
        raise ValueError(f"{fn}: crop={crop} must be a fraction of the side in (0, 1) (e.g. 0.875), or None.")


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """Translate the image content by ``(dy, dx)`` pixels, filling the uncovered border by edge replication."""
    s = max(abs(dy), abs(dx))
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., s - dy: s - dy + h, s - dx: s - dx + w]


def _center_crop_resize(x: Tensor, crop: float) -> Tensor:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[..., top: top + ch, left: left + cw], size=(h, w), mode="bilinear", align_corners=False)


def tta_view_names(flips: bool = False, shifts: int = 0, crop: float | None = None) -> list[str]:
    """Names of the views :func:`tta_views` returns, in order."""
    _check("tta_view_names", shifts, crop)
    names = ["identity"] + (["hflip"] if flips else [])
    if shifts:
        names += [f"shift({dy},{dx})" for dy, dx in ((-shifts, 0), (shifts, 0), (0, -shifts), (0, shifts))]
    if crop is not None:
        names.append(f"crop({crop})")
    return names


def tta_views(x: Tensor, flips: bool = False, shifts: int = 0, crop: float | None = None) -> list[Tensor]:
    """Deterministic views of an image batch ``(N, C, H, W)``: identity first, then the requested ones.

    Args:
        x: the normalised input batch.
        flips: add the horizontal mirror (only for data whose labels survive a flip: not digits or text).
        shifts: add four views translated by this many pixels up, down, left and right (edges replicated).
        crop: add a centre crop of this fraction of each side, resized back to ``H x W`` (bilinear).

    Returns:
        The views, in the order of :func:`tta_view_names`.

    Raises:
        ValueError: ``x`` not 4-D, negative ``shifts``, ``crop`` outside (0, 1).
    """
    _check("tta_views", shifts, crop)
    if x.ndim != 4:
        raise ValueError(f"tta_views: x has shape {tuple(x.shape)}; pass an image batch (N, C, H, W).")
    views = [x] + ([x.flip(-1)] if flips else [])
    if shifts:
        views += [_shift(x, dy, dx) for dy, dx in ((-shifts, 0), (shifts, 0), (0, -shifts), (0, shifts))]
    if crop is not None:
        views.append(_center_crop_resize(x, crop))
    return views


@torch.no_grad()
def tta_probs(
    forward: Callable[[Tensor], Tensor], x: Tensor, flips: bool = False, shifts: int = 0, crop: float | None = None
) -> Tensor:
    """Mean softmax over the views of :func:`tta_views`: ``mean_v softmax(forward(view_v))``, ``(N, C)``.

    Args:
        forward: returns logits ``(N, C)`` for an input batch (a model in eval mode).
        x: input batch ``(N, C, H, W)``.
        flips: see :func:`tta_views`.
        shifts: see :func:`tta_views`.
        crop: see :func:`tta_views`.
    """
    # One view at a time: the memory of one batch, whatever the number of views.
    views = tta_views(x, flips=flips, shifts=shifts, crop=crop)
    return torch.stack([forward(view).float().softmax(dim=1) for view in views]).mean(dim=0)
