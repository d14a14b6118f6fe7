"""lightkit data modules: embedded data sets, image folders and CSVs with one split and preprocessing rule.

Augmentation pipelines live in :mod:`lightkit.data.augment` (imported only when a data module
is given ``augmentations``, so albumentations is not loaded otherwise).
"""

from lightkit.data.base import BaseImageDataModule
from lightkit.data.embedded import DigitsDataModule, MNIST5kDataModule
from lightkit.data.folder import CSVDataModule, ImageFolderDataModule
from lightkit.data.multitask import DigitsMultiTaskDataModule, MultiTaskCSVDataModule

__all__ = [
    "BaseImageDataModule",
    "CSVDataModule",
    "DigitsDataModule",
    "DigitsMultiTaskDataModule",
    "ImageFolderDataModule",
    "MNIST5kDataModule",
    "MultiTaskCSVDataModule",
]
