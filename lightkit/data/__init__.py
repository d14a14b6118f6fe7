"""lightkit data modules: embedded data sets, image folders and CSVs (in memory or streamed) with one split
and preprocessing rule, and LitData shards of them for many GPUs and nodes.

Augmentation pipelines live in :mod:`lightkit.data.augment` (imported only when a data module
is given ``augmentations``, so albumentations is not loaded otherwise).
"""

from lightkit.data.base import BaseImageDataModule
from lightkit.data.embedded import DigitsDataModule, MNIST5kDataModule
from lightkit.data.folder import CSVDataModule, ImageFolderDataModule
from lightkit.data.multitask import DigitsMultiTaskDataModule, MultiTaskCSVDataModule
from lightkit.data.shards import ShardDataModule, prepare_shards

__all__ = [
    "BaseImageDataModule",
    "CSVDataModule",
    "DigitsDataModule",
    "DigitsMultiTaskDataModule",
    "ImageFolderDataModule",
    "MNIST5kDataModule",
    "MultiTaskCSVDataModule",
    "ShardDataModule",
    "prepare_shards",
]
