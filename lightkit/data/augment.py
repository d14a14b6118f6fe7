"""Albumentations 2.x pipelines from a preset name or a YAML list, with explicit fill modes.

The variations are the usual ones for image classification: horizontal / vertical flip, rotation,
scaling, random crop + resize, translation, Gaussian noise and brightness / contrast (illumination),
plus Cutout (DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552) as ``CoarseDropout``.

Spatial transforms leave an empty area; ``fill`` says what goes there (numpy ``np.pad`` names):

========== ========================= ==============
fill       cv2 border mode           6 7 8 | ...
========== ========================= ==============
constant   ``BORDER_CONSTANT``       0 0 0 | 6 7 8
edge       ``BORDER_REPLICATE``      6 6 6 | 6 7 8
symmetric  ``BORDER_REFLECT``        8 7 6 | 6 7 8
reflect    ``BORDER_REFLECT_101``    9 8 7 | 6 7 8 9
wrap       ``BORDER_WRAP``           (the other side)
========== ========================= ==============
"""

from __future__ import annotations

import inspect
import os

# albumentations checks PyPI for updates on import (2 s timeout, an error under -W error offline).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

__all__ = [
    "FILL_MODES",
    "PRESETS",
    "SHORT_NAMES",
    "SeededCompose",
    "build_augmentations",
]

FILL_MODES: dict[str, int] = {
    "constant": cv2.BORDER_CONSTANT,
    "edge": cv2.BORDER_REPLICATE,
    "symmetric": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "reflect": cv2.BORDER_REFLECT_101,
}
"""``fill`` name -> OpenCV border mode, following ``numpy.pad``'s names."""

# Preset strengths. Rotation in degrees, scale as +-fraction, translation as +-fraction of the side,
# crop_min as the smallest crop area fraction, noise std as a fraction of the max pixel value,
# brightness / contrast as +-fraction; ``p_*`` are per-image probabilities.
PRESETS: dict[str, dict[str, float]] = {
    "light": {
        "rotate": 10.0, "scale": 0.05, "translate": 0.05, "p_affine": 0.5,
        "crop_min": 0.9, "p_crop": 0.3, "noise": 0.02, "p_noise": 0.1,
        "bc": 0.1, "p_bc": 0.3, "vflip": 0.0,
    },
    "standard": {
        "rotate": 15.0, "scale": 0.1, "translate": 0.1, "p_affine": 0.7,
        "crop_min": 0.75, "p_crop": 0.5, "noise": 0.04, "p_noise": 0.2,
        "bc": 0.2, "p_bc": 0.5, "vflip": 0.0,
    },
    "strong": {
        "rotate": 30.0, "scale": 0.2, "translate": 0.15, "p_affine": 0.8,
        "crop_min": 0.5, "p_crop": 0.5, "noise": 0.08, "p_noise": 0.3,
        "bc": 0.3, "p_bc": 0.7, "vflip": 1.0,
    },
}
"""Strength of each preset (``none`` builds no pipeline)."""

# Short name -> (albumentations class, default kwargs). Spatial ones get ``border_mode`` / ``fill``
# from ``fill`` unless the item sets them; ``crop`` gets ``size=(image_size, image_size)``.
SHORT_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "hflip": ("HorizontalFlip", {"p": 0.5}),
    "vflip": ("VerticalFlip", {"p": 0.5}),
    "rotate": ("Rotate", {"limit": (-15.0, 15.0), "p": 0.5}),
    "scale": ("Affine", {"scale": (0.9, 1.1), "p": 0.5}),
    "translate": ("Affine", {"translate_percent": (-0.1, 0.1), "p": 0.5}),
    "crop": ("RandomResizedCrop", {"scale": (0.75, 1.0), "ratio": (0.75, 4 / 3), "p": 0.5}),
    "noise": ("GaussNoise", {"std_range": (0.02, 0.06), "mean_range": (0.0, 0.0), "p": 0.2}),
    "brightness_contrast": ("RandomBrightnessContrast", {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}),
    "cutout": (
        "CoarseDropout",
        {"num_holes_range": (1, 1), "hole_height_range": (0.25, 0.5), "hole_width_range": (0.25, 0.5), "fill": 0,
         "p": 0.5},
    ),
}
"""Short names usable in an explicit list, with their albumentations class and defaults."""

# Transforms that mirror the image: wrong for data whose label depends on orientation (digits).
_FLIPS = {"HorizontalFlip", "VerticalFlip", "Transpose", "D4", "SquareSymmetry", "RandomRotate90"}


class SeededCompose(A.Compose):
    """``A.Compose`` that reseeds itself from ``torch.initial_seed()`` in each process.

    albumentations 2.x draws from its own numpy generator, created once; DataLoader workers fork
    copies of it, so without this every worker would apply the same "random" augmentations. Torch
    gives each worker (and each epoch, without persistent workers) a distinct initial seed derived
    from the main process seed, so this is both decorrelated and reproducible under ``seed_everything``.
    """

    _lightkit_seed: int | None = None

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        seed = torch.initial_seed() % 2**32
        if seed != self._lightkit_seed:
            self.set_random_seed(seed)
            self._lightkit_seed = seed
        return super().__call__(*args, force_apply=force_apply, **data)

    def seeded(self, seed: int, **data: Any) -> dict[str, Any]:
        """Apply the pipeline with its random draws seeded by ``seed`` (the streaming paths seed each sample
        by its epoch and index, so a sample's augmentation does not depend on the worker that reads it)."""
        self.set_random_seed(seed)
        return super().__call__(**data)


def _preset(name: str, image_size: int, border_mode: int, flips: bool) -> list[A.BasicTransform]:
    s = PRESETS[name]
    spatial = {"border_mode": border_mode, "fill": 0}
    out: list[A.BasicTransform] = []
    if flips:
        out.append(A.HorizontalFlip(p=0.5))
        if s["vflip"]:
            out.append(A.VerticalFlip(p=0.5))
    out += [
        A.Affine(
            rotate=(-s["rotate"], s["rotate"]),
            scale=(1 - s["scale"], 1 + s["scale"]),
            translate_percent=(-s["translate"], s["translate"]),
            p=s["p_affine"],
            **spatial,
        ),
        A.RandomResizedCrop(size=(image_size, image_size), scale=(s["crop_min"], 1.0), p=s["p_crop"]),
        A.GaussNoise(std_range=(s["noise"] / 2, s["noise"]), mean_range=(0.0, 0.0), p=s["p_noise"]),
        A.RandomBrightnessContrast(brightness_limit=s["bc"], contrast_limit=s["bc"], p=s["p_bc"]),
    ]
    return out


def _from_item(index: int, item: dict[str, Any], image_size: int, border_mode: int) -> A.BasicTransform:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(
            f"build_augmentations: item {index} is {item!r}; write each item as a mapping with a 'name' key, "
            f"e.g. {{'name': 'rotate', 'limit': 10}}."
        )
    name = item["name"]
    kwargs = {k: v for k, v in item.items() if k != "name"}
    if name in SHORT_NAMES:
        cls_name, defaults = SHORT_NAMES[name]
        if name == "translate" and "translate_px" in kwargs:
            defaults = {k: v for k, v in defaults.items() if k != "translate_percent"}
        kwargs = {**defaults, **kwargs}
    elif hasattr(A, name) and isinstance(getattr(A, name), type) and issubclass(getattr(A, name), A.BasicTransform):
        cls_name = name
    else:
        raise ValueError(
            f"build_augmentations: unknown augmentation {name!r} (item {index}); use one of "
            f"{sorted(SHORT_NAMES)} or an albumentations transform class name such as 'Affine'."
        )
    cls = getattr(A, cls_name)
    params = inspect.signature(cls.__init__).parameters
    if "border_mode" in params and "fill" in params:
        kwargs.setdefault("border_mode", border_mode)
        kwargs.setdefault("fill", 0)
    if cls_name == "RandomResizedCrop":
        kwargs.setdefault("size", (image_size, image_size))
    try:
        # strict=True: an argument albumentations 2.x renamed (value, cval, mode) raises, not warns.
        return cls(**kwargs, strict=True)
    except (TypeError, ValueError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("For further")]
        first = " / ".join(lines) or type(err).__name__
        raise ValueError(
            f"build_augmentations: item {index} ({name!r} -> A.{cls_name}) rejected its arguments "
            f"{sorted(kwargs)}: {first}; fix them against albumentations 2.x (fill/border_mode, not value/cval/mode)."
        ) from err


def build_augmentations(
    spec: str | list[dict[str, Any]] | None,
    image_size: int,
    fill: str = "constant",
    flips_preserve_label: bool = True,
    where: str = "build_augmentations",
) -> A.Compose | None:
    """Training augmentation pipeline: a preset or an explicit list, on HWC uint8 numpy images.

    The pipeline first resizes to ``image_size`` (so noise, crops and cutout act at the model's
    resolution) and returns an ``image_size`` x ``image_size`` image with the input's channels and
    dtype. Normalisation and tensor conversion are left to the data module.

    Args:
        spec: ``None`` or ``"none"`` (no augmentation), a preset ``"light"`` / ``"standard"`` /
            ``"strong"`` (see :data:`PRESETS`), or a list of mappings, each ``{"name": ..., **kwargs}``
            where ``name`` is a short name (:data:`SHORT_NAMES`: ``hflip``, ``vflip``, ``rotate``,
            ``scale``, ``translate``, ``crop``, ``noise``, ``brightness_contrast``, ``cutout``; kwargs
            override the defaults), an albumentations class name (``Affine``, ``CoarseDropout``...) or
            a preset name without arguments, which expands in place (``[{name: standard}, {name: cutout}]``).
        image_size: output height and width in pixels.
        fill: what fills the area a spatial transform uncovers: ``constant`` (0), ``edge``,
            ``reflect``, ``symmetric`` or ``wrap`` (see :data:`FILL_MODES`). An item's own
            ``border_mode`` wins.
        flips_preserve_label: whether mirroring keeps the label (not for digits or text). When
            ``False``, presets omit flips and a flip in an explicit list gives a warning.
        where: who asks (a data module's class name), named in the flip warning.

    Returns:
        A :class:`SeededCompose` (an ``A.Compose``), or ``None`` for no augmentation.

    Raises:
        ValueError: unknown preset, fill mode or transform name; a non-positive ``image_size``;
            arguments albumentations rejects (including 1.x names such as ``cval``); a preset item
            with arguments.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"build_augmentations: fill={fill!r} is not a fill mode; use one of {list(FILL_MODES)}.")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"build_augmentations: image_size={image_size!r} must be a positive int (pixels).")
    if spec is None or spec == "none":
        return None
    border_mode = FILL_MODES[fill]
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(
                f"build_augmentations: unknown preset {spec!r}; "
                f"use one of {['none', *PRESETS]} or a list of transforms."
            )
        transforms = _preset(spec, image_size, border_mode, flips_preserve_label)
    elif isinstance(spec, (list, tuple)):
        transforms = []
        for i, item in enumerate(spec):
            if isinstance(item, dict) and item.get("name") in PRESETS:
                # A preset inside a list expands in place: [{name: standard}, {name: cutout}].
                if len(item) > 1:
                    raise ValueError(
                        f"build_augmentations: item {i} is the preset {item['name']!r} with arguments "
                        f"{sorted(k for k in item if k != 'name')}; a preset takes none: list the transforms instead."
                    )
                transforms += _preset(item["name"], image_size, border_mode, flips_preserve_label)
                continue
            transform = _from_item(i, item, image_size, border_mode)
            if not flips_preserve_label and type(transform).__name__ in _FLIPS:
                rank_zero_warn(
                    f"{where}: {item['name']!r} flips change the label for this data (e.g. digits); "
                    f"remove it from the augmentation list (or, if mirrored images do keep their label here, say so: "
                    f"flips: true on a folder or CSV data module, flips_preserve_label = True on your own)."
                )
            transforms.append(transform)
    else:
        raise ValueError(
            f"build_augmentations: spec of type {type(spec).__name__}; give None, a preset name or a list of mappings."
        )
    # Resize first: everything after it works at the model's resolution. RandomResizedCrop, when it
    # fires, re-outputs image_size; the final Resize covers user transforms that change the size.
    pipeline = [A.Resize(image_size, image_size), *transforms, A.Resize(image_size, image_size)]
    return SeededCompose(pipeline, strict=True)

