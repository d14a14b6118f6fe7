"""lightkit: PyTorch Lightning plug-ins and a LightningCLI for fine-tuning timm image models.

    from lightkit import ImageClassifier, DigitsDataModule
    from lightkit.callbacks import FineTune, EMA, LRRangeTest

Names are imported on first use, so ``import lightkit.functional`` does not load Lightning or timm.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lightkit")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

_EXPORTS: dict[str, str] = {
    "BaseImageDataModule": "lightkit.data",
    "CSVDataModule": "lightkit.data",
    "DigitsDataModule": "lightkit.data",
    "ImageFolderDataModule": "lightkit.data",
    "MNIST5kDataModule": "lightkit.data",
    "ImageClassifier": "lightkit.models",
    "MultiTaskClassifier": "lightkit.models",
    "DigitsMultiTaskDataModule": "lightkit.data",
    "MultiTaskCSVDataModule": "lightkit.data",
    "PretrainedWeightsError": "lightkit.models",
    "create_encoder": "lightkit.models",
    "ensemble_predict": "lightkit.ensemble",
    "plot_schedule": "lightkit.plotting",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
