"""Augmentation throughput on one core: albumentations 2.x vs torchvision.transforms.v2, the same pipeline.

Pipeline (both libraries, same parameters): random resized crop (scale 0.5-1, ratio 3/4-4/3), horizontal
flip (p 0.5), affine (rotate +-15 deg, translate +-10 %, scale 0.9-1.1, constant fill), brightness /
contrast jitter 0.2 (torchvision's ColorJitter semantics; ``A.ColorJitter`` reproduces them), Gaussian
noise (sigma 0.05 of the range), cutout (one hole, p 0.5), normalise, float32 CHW tensor out.

Inputs: albumentations gets HWC ``uint8`` numpy arrays (its native format); torchvision gets CHW
``uint8`` tensors (its fastest path) and, as a third column, PIL images. Settings: ``photo``, the two
427x640 RGB photos shipped with scikit-learn (``load_sample_images``) cropped to 224; ``digits``,
sklearn's 8x8 digits upscaled to 32x32 gray (lightkit's quickstart input) out at 32. torchvision
antialiases when a crop is shrunk (its default for tensors); OpenCV's bilinear resize, which
albumentations uses, does not, so a fourth column runs torchvision with ``antialias=False``, the same
resize as albumentations.

Measurement: ``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``; each repetition times one pass over
the same images for every library, the order rotating per repetition (ABC, BCA, CAB, ...) so machine load
hits them alike; images/s from the median pass. The ratios printed are albumentations / torchvision-tensor
(default and antialias off).

    python benchmarks/augment_throughput.py                 # both settings, 15 repetitions
    python benchmarks/augment_throughput.py --settings photo --reps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def albumentations_pipeline(size: int, channels: int) -> A.Compose:
    mean, std = MEAN[:channels], STD[:channels]
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), p=1.0),
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), border_mode=cv2.BORDER_CONSTANT,
                 fill=0, p=1.0),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.0, hue=0.0, p=1.0),
        A.GaussNoise(std_range=(0.05, 0.05), mean_range=(0.0, 0.0), p=1.0),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.25, 0.5), hole_width_range=(0.25, 0.5), fill=0,
                        p=0.5),
        A.Normalize(mean=mean, std=std),
        A.ToTensorV2(),
    ], seed=0)


def torchvision_pipeline(size: int, channels: int, antialias: bool = True) -> v2.Compose:
    mean, std = MEAN[:channels], STD[:channels]
    return v2.Compose([
        v2.ToImage(),  # PIL -> tv_tensors.Image; a uint8 tensor passes through
        v2.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), antialias=antialias),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=0),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.GaussianNoise(sigma=0.05, clip=True),  # float input only: after ToDtype
        v2.RandomErasing(p=0.5, scale=(0.0625, 0.25), ratio=(0.5, 2.0), value=0),
        v2.Normalize(mean=mean, std=std),
    ])


def load_images(setting: str) -> tuple[list[np.ndarray], int]:
    if setting == "photo":
        from sklearn.datasets import load_sample_images

        photos = load_sample_images().images  # two 427x640x3 uint8
        return [photos[i % 2] for i in range(32)], 224
    from sklearn.datasets import load_digits

    digits = np.rint(load_digits().images[:256] * (255 / 16)).astype(np.uint8)
    return [cv2.resize(d, (32, 32), interpolation=cv2.INTER_LINEAR)[..., None] for d in digits], 32


def one_pass(fn: Callable[[Any], torch.Tensor], items: list[Any]) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - t0


def bench(setting: str, reps: int) -> dict[str, float]:
    images, size = load_images(setting)
    channels = images[0].shape[2]
    alb = albumentations_pipeline(size, channels)
    tv = torchvision_pipeline(size, channels)
    tv_plain = torchvision_pipeline(size, channels, antialias=False)
    tensors = [torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) for img in images]
    pils = [Image.fromarray(img[..., 0] if channels == 1 else img) for img in images]
    runs: dict[str, tuple[Callable[[Any], torch.Tensor], list[Any]]] = {
        "albumentations (numpy)": (lambda img: alb(image=img)["image"], images),
        "torchvision v2 (tensor)": (tv, tensors),
        "torchvision v2 (PIL)": (tv, pils),
        # OpenCV's INTER_LINEAR (albumentations) does not antialias when shrinking; this is the same resize.
        "torchvision v2 (tensor, antialias off)": (tv_plain, tensors),
    }
    # Same output contract on both sides: float32 (C, size, size).
    for name, (fn, items) in runs.items():
        out = fn(items[0])
        if out.dtype != torch.float32 or tuple(out.shape) != (channels, size, size):
            raise RuntimeError(f"{name}: output {out.dtype} {tuple(out.shape)}, "
                               f"expected float32 {(channels, size, size)}")
        one_pass(fn, items[:4])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        for k in range(len(names)):
            name = names[(rep + k) % len(names)]
            fn, items = runs[name]
            times[name].append(one_pass(fn, items))
    return {name: len(images) / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["photo", "digits"], choices=["photo", "digits"])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    import torchvision

    print(f"albumentations {A.__version__}, torchvision {torchvision.__version__}, torch {torch.__version__}, "
          f"opencv {cv2.__version__}; 1 thread; load average before {os.getloadavg()}")
    for setting in args.settings:
        rates = bench(setting, args.reps)
        base = rates["torchvision v2 (tensor)"]
        print(f"\n{setting}: images/s (median of {args.reps} interleaved passes)")
        print("| library (input) | images/s | vs torchvision tensor |\n|---|---:|---:|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")
        ratio = rates["albumentations (numpy)"] / base
        same_resize = rates["albumentations (numpy)"] / rates["torchvision v2 (tensor, antialias off)"]
        print(f"{setting}: albumentations / torchvision v2 (tensor) = {ratio:.2f}x "
              f"({'meets' if ratio >= 1.5 else 'misses'} the >= 1.5x goal); "
              f"vs torchvision with antialias off = {same_resize:.2f}x")
    print(f"\nload average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
