"""Augmentation pipelines: pixel-exact fill modes against numpy, presets, errors, flip warnings."""

from __future__ import annotations

import pickle
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from lightkit.data.augment import FILL_MODES, PRESETS, SHORT_NAMES, build_augmentations

IMAGE = (np.arange(36, dtype=np.uint8).reshape(6, 6, 1) * 7 + 1)


def _shift_oracle(image: np.ndarray, dx: int, dy: int, mode: str) -> np.ndarray:
    """Shift right by dx >= 0 and up by dy >= 0, filling the uncovered area like ``np.pad(mode=...)``."""
    h, w = image.shape[:2]
    padded = np.pad(image[..., 0], ((0, dy), (dx, 0)), mode=mode)
    return padded[dy : dy + h, :w]


def test_fill_modes_are_the_numpy_names() -> None:
    assert FILL_MODES == {
        "constant": cv2.BORDER_CONSTANT,
        "edge": cv2.BORDER_REPLICATE,
        "symmetric": cv2.BORDER_REFLECT,
        "wrap": cv2.BORDER_WRAP,
        "reflect": cv2.BORDER_REFLECT_101,
    }


@pytest.mark.parametrize("mode", list(FILL_MODES))
def test_fill_mode_pixel_exact_affine(mode: str) -> None:
    shift = A.Affine(translate_px={"x": (2, 2), "y": (-1, -1)}, border_mode=FILL_MODES[mode], fill=0, p=1)
    out = A.Compose([shift], strict=True)(image=IMAGE)["image"]
    np.testing.assert_array_equal(out[..., 0], _shift_oracle(IMAGE, 2, 1, mode))


@pytest.mark.parametrize("mode", list(FILL_MODES))
def test_fill_mode_pixel_exact_through_build(mode: str) -> None:
    spec = [{"name": "translate", "translate_px": {"x": (3, 3), "y": (-2, -2)}, "p": 1.0}]
    out = build_augmentations(spec, image_size=6, fill=mode)(image=IMAGE)["image"]
    assert out.shape == IMAGE.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], _shift_oracle(IMAGE, 3, 2, mode))


def test_fill_modes_differ() -> None:
    outs = {m: _shift_oracle(IMAGE, 2, 0, m)[:, :2].tobytes() for m in FILL_MODES}
    assert len(set(outs.values())) == len(FILL_MODES)


@pytest.mark.parametrize("spec", [None, "none"])
def test_none(spec: str | None) -> None:
    assert build_augmentations(spec, 32) is None


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("shape", [(8, 8, 1), (40, 50, 3)])
@pytest.mark.parametrize("fill", ["constant", "reflect"])
def test_presets_output_size(preset: str, shape: tuple[int, int, int], fill: str) -> None:
    pipeline = build_augmentations(preset, 32, fill=fill)
    assert isinstance(pipeline, A.Compose)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = pipeline(image=rng.integers(0, 256, shape, dtype=np.uint8))["image"]
        assert out.shape == (32, 32, shape[2]) and out.dtype == np.uint8


def test_presets_omit_flips_when_they_change_the_label() -> None:
    flips = (A.HorizontalFlip, A.VerticalFlip)
    assert any(isinstance(t, flips) for t in build_augmentations("strong", 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline = build_augmentations("strong", 16, flips_preserve_label=False)
    assert not any(isinstance(t, flips) for t in pipeline)


def test_every_short_name_builds() -> None:
    pipeline = build_augmentations([{"name": n, "p": 1.0} for n in SHORT_NAMES], 16, fill="wrap")
    out = pipeline(image=np.full((20, 12, 3), 128, np.uint8))["image"]
    assert out.shape == (16, 16, 3)
    rotate = next(t for t in pipeline if isinstance(t, A.Rotate))
    assert rotate.border_mode == cv2.BORDER_WRAP


def test_item_overrides_defaults_and_yaml_lists_accepted() -> None:
    pipeline = build_augmentations(
        [{"name": "rotate", "limit": [-5, 5]},
         {"name": "Affine", "rotate": [-3, 3], "border_mode": cv2.BORDER_REFLECT}],
        16,
        fill="edge",
    )
    rotate, affine = pipeline.transforms[1], pipeline.transforms[2]
    assert rotate.limit == (-5, 5) and rotate.border_mode == cv2.BORDER_REPLICATE
    assert affine.border_mode == cv2.BORDER_REFLECT


def test_cutout_fills_constant() -> None:
    pipeline = build_augmentations([{"name": "cutout", "p": 1.0}], 16)
    out = pipeline(image=np.full((16, 16, 1), 200, np.uint8))["image"]
    assert (out == 0).any() and (out == 200).any()


def test_flip_warning() -> None:
    with pytest.warns(UserWarning, match=r"'hflip' flips change the label for this data \(e.g. digits\); remove it"):
        build_augmentations([{"name": "hflip"}, {"name": "rotate"}], 16, flips_preserve_label=False)
    with pytest.warns(UserWarning, match="'VerticalFlip' flips change the label"):
        build_augmentations([{"name": "VerticalFlip"}], 16, flips_preserve_label=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spec": "medium"}, r"unknown preset 'medium'; use one of \['none', 'light', 'standard', 'strong'\]"),
        ({"spec": "light", "fill": "mirror"}, r"fill='mirror' is not a fill mode; use one of \['constant'"),
        ({"spec": [{"name": "blur_it"}]},
         r"unknown augmentation 'blur_it' \(item 0\); use one of \['brightness_contrast'"),
        ({"spec": [{"name": "Compose"}]}, "unknown augmentation 'Compose'"),
        ({"spec": ["hflip"]}, "item 0 is 'hflip'; write each item as a mapping with a 'name' key"),
        ({"spec": [{"name": "Affine", "cval": 0}]}, r"Argument\(s\) 'cval' are not valid for transform Affine"),
        ({"spec": [{"name": "rotate", "limit": "x"}]}, r"item 0 \('rotate' -> A.Rotate\) rejected its arguments"),
        ({"spec": "light", "image_size": 0}, "image_size=0 must be a positive int"),
        ({"spec": 3}, "spec of type int"),
        ({"spec": [{"name": "light", "p": 0.5}]},
         r"item 0 is the preset 'light' with arguments \['p'\]; a preset takes none"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    kwargs = {"image_size": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_augmentations(**kwargs)


def test_reseeds_per_torch_seed_and_pickles() -> None:
    spec = [{"name": "Affine", "rotate": (-40, 40), "p": 1.0}]
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pipeline = pickle.loads(pickle.dumps(build_augmentations(spec, 16)))

    def run(seed: int) -> np.ndarray:
        torch.manual_seed(seed)  # what each DataLoader worker gets: a distinct torch initial seed
        pipeline._lightkit_seed = None
        return pipeline(image=image)["image"]

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_preset_inside_a_list_expands_in_place() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the preset leaves flips out for digits: no warning
        pipeline = build_augmentations([{"name": "standard"}, {"name": "cutout", "p": 1.0}], 16,
                                       flips_preserve_label=False)
    names = [type(t).__name__ for t in pipeline.transforms]
    preset = [type(t).__name__ for t in build_augmentations("standard", 16, flips_preserve_label=False).transforms]
    assert names == [*preset[:-1], "CoarseDropout", "Resize"]
    with_flips = [type(t).__name__ for t in build_augmentations([{"name": "strong"}], 16).transforms]
    assert with_flips[1:3] == ["HorizontalFlip", "VerticalFlip"]
