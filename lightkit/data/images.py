"""Pure image helpers for the data modules: list, decode, convert channels, resize, normalize.

Everything works on whole stacks (``uint8`` NHWC numpy in, ``uint8`` / ``float32`` NCHW torch out):
the in-memory data modules pay the resize and normalisation once in ``setup``; the streaming ones
(:mod:`lightkit.data.stream`) call the same functions on one image at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightkit.data.errors import BadImageError

__all__ = [
    "AugmentedImageDataset",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "decode_image",
    "decode_images",
    "list_images",
    "normalize",
    "resize_images",
    "to_channels",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
"""File suffixes (lower case) treated as images; other files in a data folder are ignored."""

# timm's interpolation names -> the filters torchvision resizes uint8 tensors with. timm's "lanczos",
# "box", "hamming" and "random" (and "area") have no uint8 tensor kernel: they resize with bicubic, the
# closest antialiased filter, and say so once (resize_images warns).
INTERPOLATIONS: dict[str, str] = {
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "nearest": "nearest",
    "area": "bicubic",
    "box": "bicubic",
    "hamming": "bicubic",
    "lanczos": "bicubic",
    "random": "bicubic",
}
_SUBSTITUTED: set[str] = set()

# ITU-R 601-2 luma, the weights PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


def list_images(folder: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Image files in ``folder`` (sorted) and the other, ignored, files; hidden files are skipped."""
    pattern = "**/*" if recursive else "*"
    images: list[Path] = []
    ignored: list[Path] = []
    for path in sorted(folder.glob(pattern)):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(path)
    return images, ignored


def decode_image(path: str | Path, channels: int, draft: int | None = None) -> np.ndarray:
    """Decode one file to a ``uint8`` HWC array with ``channels`` channels (1: luma, 3: RGB).

    EXIF orientation is applied; alpha is dropped; palette and 16-bit images are converted by PIL.
    ``draft``: for a caller that shrinks the image anyway (the pixel baseline), let JPEG decode at
    1/2, 1/4 or 1/8 scale while both sides stay >= ``draft`` pixels (PIL's ``draft``; other formats
    ignore it). Training never sets it.

    Raises:
        BadImageError: the file is missing, truncated or not an image PIL can read.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            if draft:
                img.draft(None, (draft, draft))
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadImageError(f"unreadable image {str(path)!r}: {reason}") from err
    return arr[:, :, None] if arr.ndim == 2 else arr


def decode_images(
    paths: Sequence[str | Path], channels: int
) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:
    """Decode many files; returns the images, the indices of the decoded paths and the failures.

    Failures are ``(path, reason)`` pairs; what to do with them is the caller's policy.
    """
    images: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[tuple[str, str]] = []
    for i, path in enumerate(paths):
        try:
            images.append(decode_image(path, channels))
        except BadImageError as err:
            bad.append((str(path), str(err.__cause__ or err)))
            continue
        kept.append(i)
    return images, kept, bad


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert a ``uint8`` NHWC stack to 1 or 3 channels: gray is replicated, RGB becomes luma."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        gray = images.astype(np.float32) @ _LUMA
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"to_channels: cannot convert {have} channels to {channels}; use 1 or 3.")


def _resize_stack(stack: np.ndarray, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a same-size ``uint8`` NHWC stack to ``uint8`` NCHW with torchvision's uint8 kernels."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    x = torch.from_numpy(np.ascontiguousarray(stack)).permute(0, 3, 1, 2)
    if tuple(x.shape[2:]) == tuple(size):
        return x.contiguous()
    # antialias: shrinking with bilinear / bicubic averages over the footprint, as PIL does.
    return resize(x.contiguous(), list(size), interpolation=InterpolationMode(mode), antialias=True)


def resize_images(
    images: np.ndarray | Sequence[np.ndarray], size: tuple[int, int], interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resize ``uint8`` HWC images (one NHWC array, or a list of any sizes) to a ``uint8`` NCHW tensor.

    ``torchvision.transforms.v2.functional.resize`` on the ``uint8`` images (no float copy), with
    antialiasing when shrinking with bilinear / bicubic, as PIL does. Images of equal size are resized
    in one call; one image alone gives the same pixels as in a stack (the streaming path relies on it).

    Args:
        images: an NHWC ``uint8`` array or a list of HWC ``uint8`` arrays with equal channel counts.
        size: output ``(height, width)`` in pixels.
        interpolation: a timm interpolation name (see :data:`INTERPOLATIONS`); names without a uint8
            kernel resize with bicubic, with a warning (once per name and process).

    Raises:
        ValueError: an interpolation name that is not in :data:`INTERPOLATIONS`.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"resize_images: interpolation={interpolation!r}; use one of {list(INTERPOLATIONS)}.")
    mode = INTERPOLATIONS[interpolation]
    if mode != interpolation and interpolation not in _SUBSTITUTED:
        _SUBSTITUTED.add(interpolation)
        warnings.warn(f"resize_images: interpolation={interpolation!r} has no uint8 resize kernel in torchvision; "
                      f"resizing with {mode!r} instead, "
                      "the closest antialiased filter (the name usually comes from the "
                      f"timm model's pretrained config).", UserWarning, stacklevel=2)
    size = (int(size[0]), int(size[1]))
    if isinstance(images, np.ndarray):
        return _resize_stack(images, size, mode)
    if not images:
        return torch.empty((0, 1, *size), dtype=torch.uint8)
    channels = images[0].shape[2]
    out = torch.empty((len(images), channels, *size), dtype=torch.uint8)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape, []).append(i)
    for indices in groups.values():
        out[indices] = _resize_stack(np.stack([images[i] for i in indices]), size, mode)
    return out


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], chunk: int = 1024) -> torch.Tensor:
    """``uint8`` NCHW -> ``float32`` NCHW ``(x / 255 - mean) / std``, per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32)
    for start in range(0, images.shape[0], chunk):
        out[start : start + chunk] = (images[start : start + chunk].float().div_(255) - m) / s
    return out


class AugmentedImageDataset(Dataset):
    """``uint8`` HWC images through an albumentations pipeline, then ``(x / 255 - mean) / std``."""

    def __init__(self, images: np.ndarray, labels: torch.Tensor, transform: Any,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.transform(image=self.images[index])["image"]
        if img.ndim == 2:  # some OpenCV ops drop a single channel axis
            img = img[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, self.labels[index]
