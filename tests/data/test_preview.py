"""``augmentation_grid``: layout in pixels, originals untouched, shared draws across pipelines, errors."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lightkit.data.augment import build_augmentations
from lightkit.data.preview import HEADER, augmentation_grid, grid_shape, save_png

# A gradient, so every fill mode leaves a different border.
IMAGE = np.add.outer(np.arange(8) * 20, np.arange(8) * 10).astype(np.uint8)[..., None]


def _cell(grid: np.ndarray, row: int, col: int, cell: int, pad: int, label_width: int) -> np.ndarray:
    top, left = HEADER + pad + row * (cell + pad), label_width + pad + col * (cell + pad)
    return grid[top:top + cell, left:left + cell]


def test_layout_originals_and_png(tmp_path: Path) -> None:
    pipe = A.Compose([A.Affine(translate_px={"x": 2, "y": 0}, p=1.0, border_mode=cv2.BORDER_CONSTANT, fill=0)])
    grid = augmentation_grid([IMAGE, IMAGE[::-1]], [pipe], views=3, cell=16, pad=2, row_labels=["a", "b"],
                             label_width=20)
    assert grid.shape == (*grid_shape(2, 4, 16, 2, 20), 3) == (HEADER + 2 * 18 + 2, 20 + 4 * 18 + 2, 3)
    original = cv2.resize(IMAGE[..., 0], (16, 16), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(_cell(grid, 0, 0, 16, 2, 20)[..., 0], original)  # nearest upscale, gray -> RGB
    shifted = cv2.resize(pipe(image=IMAGE)["image"][..., 0], (16, 16), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(_cell(grid, 0, 1, 16, 2, 20)[..., 2], shifted)
    path = save_png(grid, tmp_path / "sub" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), grid)


def test_fill_mode_rows_share_the_draws_and_differ_only_in_the_fill() -> None:
    spec = [{"name": "Affine", "rotate": (-40, 40), "p": 1.0}]
    pipes = [build_augmentations(spec, 8, fill) for fill in ("constant", "edge", "wrap")]
    before = torch.random.get_rng_state()
    grid = augmentation_grid([IMAGE], pipes, views=2, seed=3, cell=8, pad=1, label_width=0)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    rows = [[_cell(grid, r, c, 8, 1, 0) for c in range(3)] for r in range(3)]
    assert all(np.array_equal(rows[0][0], rows[r][0]) for r in (1, 2))  # the same original
    assert not np.array_equal(rows[0][1], rows[1][1]) and not np.array_equal(rows[1][1], rows[2][1])
    # Same angle in every row: the pixels no fill reaches (the centre) agree.
    assert all(np.array_equal(rows[0][1][3:5, 3:5], rows[r][1][3:5, 3:5]) for r in (1, 2))
    again = augmentation_grid([IMAGE], pipes, views=2, seed=3, cell=8, pad=1, label_width=0)
    assert np.array_equal(grid, again)  # reproducible, whatever the pipelines drew before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": []}, "got 0 images and 1 pipelines; give at least one of each"),
        ({"views": 0}, "views=0, cell=64 must be >= 1"),
        ({"row_labels": ["a", "b"]}, r"2 row_labels for 1 rows \(1 images x 1 pipelines\)"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    args = {"images": [IMAGE], "pipelines": [A.Compose([A.HorizontalFlip(p=1.0)])], **kwargs}
    with pytest.raises(ValueError, match=match):
        augmentation_grid(**args)


def test_float_image_raises() -> None:
    with pytest.raises(TypeError, match="images must be uint8 HWC"):
        augmentation_grid([IMAGE.astype(np.float32)], [A.Compose([])], views=1)
