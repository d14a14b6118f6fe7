"""A grid of original vs augmented images, to look at an augmentation pipeline before training with it.

Each row is one image through one pipeline: the original, then ``views`` augmented draws. With
several pipelines (one per fill mode, say) every image gets one row per pipeline and all of its rows
use the same random draws, so the rows differ only in what the pipelines differ in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["augmentation_grid", "grid_shape", "save_png"]

HEADER = 14
"""Pixels of the column-title strip on top of the grid."""


def grid_shape(rows: int, cols: int, cell: int, pad: int, label_width: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of a grid of ``rows`` x ``cols`` cells of ``cell`` pixels."""
    return HEADER + rows * (cell + pad) + pad, label_width + cols * (cell + pad) + pad


def _rgb(image: np.ndarray, cell: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8:
        raise TypeError(f"augmentation_grid: images must be uint8 HWC (what albumentations takes), got {image.dtype}.")
    big = cv2.resize(image, (cell, cell), interpolation=cv2.INTER_NEAREST)
    return np.repeat(big[:, :, None], 3, axis=2) if big.ndim == 2 else big[:, :, :3]


def _draw(pipeline: Callable[..., dict], image: np.ndarray, seed: int) -> np.ndarray:
    # Same draws for every pipeline of one image: albumentations' own generator and, for lightkit's
    # SeededCompose, torch's initial seed, which it reseeds from; the caller's torch RNG is restored.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(pipeline, A.Compose):
            pipeline.set_random_seed(seed)
        return pipeline(image=image)["image"]


def augmentation_grid(
    images: Sequence[np.ndarray],
    pipelines: Sequence[Callable[..., dict]],
    views: int = 6,
    seed: int = 0,
    cell: int = 64,
    pad: int = 2,
    row_labels: Sequence[str] | None = None,
    label_width: int = 96,
) -> np.ndarray:
    """Original and augmented views side by side, as an RGB ``uint8`` array.

    Args:
        images: ``uint8`` HWC images (1 or 3 channels), as the pipelines take them.
        pipelines: albumentations-style callables ``p(image=x)["image"]``; each image gets one row per
            pipeline, in this order.
        views: augmented draws per row (columns after the original).
        seed: the draws of view ``v`` of image ``i`` use seed ``seed * 1_000_003 + i * 1_000 + v``,
            identical across pipelines.
        cell: side of each image in the grid, pixels (nearest-neighbour upscale, so pixels stay visible).
        pad: gap between cells, pixels.
        row_labels: one label per row (``len(images) * len(pipelines)``), drawn in the left margin.
        label_width: width of the left margin, pixels (0: no labels).

    Returns:
        ``(height, width, 3)`` uint8 with ``(height, width) = grid_shape(rows, views + 1, cell, pad,
        label_width)``.

    Raises:
        ValueError: no images or pipelines, ``views`` or ``cell`` below 1, ``pad`` or ``label_width``
            negative, or a wrong number of ``row_labels``.
    """
    if not images or not pipelines:
        raise ValueError(f"augmentation_grid: got {len(images)} images and {len(pipelines)} pipelines; "
                         "give at least one of each.")
    if views < 1 or cell < 1 or pad < 0 or label_width < 0:
        raise ValueError(f"augmentation_grid: views={views}, cell={cell} must be >= 1 and pad={pad}, "
                         f"label_width={label_width} >= 0.")
    rows = len(images) * len(pipelines)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"augmentation_grid: {len(row_labels)} row_labels for {rows} rows "
                         f"({len(images)} images x {len(pipelines)} pipelines).")
    height, width = grid_shape(rows, views + 1, cell, pad, label_width)
    grid = np.full((height, width, 3), 255, np.uint8)
    row = 0
    for i, image in enumerate(images):
        for pipeline in pipelines:
            top = HEADER + pad + row * (cell + pad)
            cells = [image] + [_draw(pipeline, image, seed * 1_000_003 + i * 1_000 + v) for v in range(views)]
            for col, img in enumerate(cells):
                left = label_width + pad + col * (cell + pad)
                grid[top:top + cell, left:left + cell] = _rgb(img, cell)
            row += 1
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(["original"] + [f"view {v + 1}" for v in range(views)]):
        draw.text((label_width + pad + col * (cell + pad), 1), title, fill=(0, 0, 0))
    if row_labels is not None and label_width:
        for r, label in enumerate(row_labels):
            draw.text((2, HEADER + pad + r * (cell + pad) + cell // 2 - 5), str(label), fill=(0, 0, 0))
    return np.asarray(canvas)


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    """Write ``grid`` (HWC uint8 RGB) as a PNG, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    return path
