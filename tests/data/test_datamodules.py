"""Embedded data modules and the shared split / preprocessing rules of ``BaseImageDataModule``."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from lightkit.data import BaseImageDataModule, DigitsDataModule, MNIST5kDataModule
from lightkit.data.errors import DataError
from lightkit.data.splits import few_shot_indices, stratified_split


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits().target


def _split_indices(dm: BaseImageDataModule) -> dict[str, np.ndarray]:
    return {split: idx for split, (_, idx) in dm._get_splits().items()}


def test_properties_right_after_init() -> None:
    dm = DigitsDataModule()
    assert (dm.num_classes, dm.in_chans, dm.class_names) == (10, 1, [str(d) for d in range(10)])
    assert DigitsDataModule.flips_preserve_label is False and MNIST5kDataModule.flips_preserve_label is False
    assert BaseImageDataModule.flips_preserve_label is True
    assert DigitsDataModule(channels=3).in_chans == 3


def test_split_sizes_and_stratification(digits_labels: np.ndarray) -> None:
    dm = DigitsDataModule(val_fraction=0.1, test_fraction=0.2)
    parts = _split_indices(dm)
    assert {k: len(v) for k, v in parts.items()} == {"train": 1257, "val": 180, "test": 360}
    assert dm.split_sizes() == {"train": 1257, "val": 180, "test": 360}
    everything = np.concatenate(list(parts.values()))
    assert len(np.unique(everything)) == len(digits_labels) == 1797  # disjoint and complete
    total = np.bincount(digits_labels)
    for split, fraction in (("test", 0.2), ("val", 0.1)):
        counts = np.bincount(digits_labels[parts[split]], minlength=10)
        assert np.all(np.abs(counts - fraction * total) <= 1.5), (split, counts)


def test_splits_deterministic_per_seed() -> None:
    a, b, c = (_split_indices(DigitsDataModule(seed=s)) for s in (1, 1, 2))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    assert not np.array_equal(a["test"], c["test"])
    # The training order is seeded too.
    loaders = [DigitsDataModule(seed=1, batch_size=8).train_dataloader() for _ in range(2)]
    first = [next(iter(loader)) for loader in loaders]
    torch.testing.assert_close(first[0][0], first[1][0])


def test_few_shot_counts(digits_labels: np.ndarray) -> None:
    dm = DigitsDataModule(samples_per_class=5, seed=3)
    parts = _split_indices(dm)
    assert np.bincount(digits_labels[parts["train"]], minlength=10).tolist() == [5] * 10
    full = _split_indices(DigitsDataModule(seed=3))
    assert set(parts["train"]) <= set(full["train"])
    np.testing.assert_array_equal(parts["test"], full["test"])  # only train is reduced
    np.testing.assert_array_equal(parts["train"],
                                  _split_indices(DigitsDataModule(samples_per_class=5, seed=3))["train"])
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 50


def test_normalization_values_at_native_size() -> None:
    dm = DigitsDataModule(mean=[0.25], std=[0.5], test_fraction=0.0, val_fraction=0.0, batch_size=2000)
    dm.setup("fit")
    assert dm.preprocessing == {"input_size": (1, 8, 8), "mean": (0.25,), "std": (0.5,), "interpolation": "bilinear"}
    x, y = next(iter(torch.utils.data.DataLoader(dm._datasets["train"], batch_size=2000)))
    raw = np.rint(load_digits().images * 255 / 16) / 255
    expected = torch.from_numpy((raw - 0.25) / 0.5).float().unsqueeze(1)
    torch.testing.assert_close(x, expected)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert isinstance(dm._datasets["train"], TensorDataset)  # no per-sample work without augmentations


def test_defaults_and_resize_and_channels() -> None:
    dm = DigitsDataModule(image_size=16, channels=3, batch_size=32)
    dm.setup("fit")
    assert dm.preprocessing["input_size"] == (3, 16, 16)
    assert dm.preprocessing["mean"] == (0.5, 0.5, 0.5) and dm.preprocessing["std"] == (0.5, 0.5, 0.5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 16, 16) and y.shape == (32,)
    torch.testing.assert_close(x[:, 0], x[:, 2])  # gray replicated
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    val = next(iter(dm.val_dataloader()))
    assert val[0].shape[1:] == (3, 16, 16)


def test_preprocessing_from_attached_model() -> None:
    module = SimpleNamespace(
        hparams={"num_classes": 10, "in_chans": 1},
        data_config={"input_size": (1, 12, 10), "mean": (0.1,), "std": (0.2,), "interpolation": "bicubic"},
    )
    dm = DigitsDataModule()
    dm.trainer = SimpleNamespace(lightning_module=module)
    dm.setup("test")
    assert dm.preprocessing == {"input_size": (1, 12, 10), "mean": (0.1,), "std": (0.2,), "interpolation": "bicubic"}
    assert next(iter(dm.test_dataloader()))[0].shape[1:] == (1, 12, 10)
    # Arguments win over the model's config; an RGB mean is reduced for gray data.
    module.data_config = {"input_size": (1, 224, 224), "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.2, 0.2)}
    dm = DigitsDataModule(image_size=8, std=[1.0])
    dm.trainer = SimpleNamespace(lightning_module=module)
    dm.setup("test")
    assert dm.preprocessing["input_size"] == (1, 8, 8)
    assert dm.preprocessing["mean"] == pytest.approx((0.5,)) and dm.preprocessing["std"] == (1.0,)


def test_model_mismatch_raises_in_setup() -> None:
    dm = DigitsDataModule()
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(hparams={"num_classes": 5}, data_config={}))
    with pytest.raises(DataError,
                       match=r"num_classes=5 but the data has 10 classes.*set the model's num_classes to 10"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(hparams={"num_classes": 10, "in_chans": 3}))
    with pytest.raises(DataError, match=r"in_chans=3 but the data gives 1 channels; set data channels: 3"):
        dm.setup("fit")
    with pytest.raises(DataError, match=r"num_classes=7"):
        dm.check_num_classes(7)
    dm.check_num_classes(10)


def test_predict_over_test_split() -> None:
    dm = DigitsDataModule(batch_size=500)
    dm.setup("predict")
    x, index = next(iter(dm.predict_dataloader()))
    assert index.dtype == torch.int64 and index[:3].tolist() == [0, 1, 2]
    assert len(dm.predict_items) == 360 and dm.predict_items[17] == "test/00017"


def test_fit_with_trainer() -> None:
    from lightning.pytorch import LightningModule, Trainer

    class Tiny(LightningModule):
        def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.data_config = {"input_size": (in_chans, 8, 8), "mean": (0.3,), "std": (0.3,)}
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

        def training_step(self, batch, batch_idx):  # noqa: ANN001
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):  # noqa: ANN001
            self.log("val/loss", nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = DigitsDataModule(batch_size=256)
    trainer = Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Tiny(), datamodule=dm)
    assert dm.preprocessing["mean"] == (0.3,) and trainer.global_step == 2


def test_mnist5k() -> None:
    dm = MNIST5kDataModule(samples_per_class=2, batch_size=100)
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 20, "val": 500, "test": 1000}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (20, 1, 28, 28) and sorted(y.tolist()) == sorted(list(range(10)) * 2)


@pytest.mark.skipif(importlib.util.find_spec("albumentations") is None, reason="albumentations not installed")
def test_light_augmentations() -> None:
    pytest.importorskip("lightkit.data.augment")
    from lightkit.data.images import AugmentedImageDataset

    dm = DigitsDataModule(augmentations="light", image_size=16, batch_size=16)
    dm.setup("fit")
    assert isinstance(dm._datasets["train"], AugmentedImageDataset)
    assert isinstance(dm._datasets["val"], TensorDataset)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 1.5}, r"val_fraction=1.5 must be in \[0, 1\)"),
        ({"test_fraction": -0.1}, r"test_fraction=-0.1 must be in \[0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction=0.5 \+ test_fraction=0.5 >= 1"),
        ({"samples_per_class": 0}, r"samples_per_class=0 must be >= 1"),
        ({"channels": 2}, r"channels=2; use 1 \(gray\), 3 \(RGB\)"),
        ({"mean": [0.5, 0.5]}, r"mean=\[0.5, 0.5\] has 2 values for 1 channels"),
        ({"std": [0.0]}, r"std=\[0.0\] must be positive"),
        ({"batch_size": 0}, r"batch_size=0 must be >= 1"),
        ({"image_size": 0}, r"image_size=0 must be a positive"),
        ({"predict_path": "/no/such/dir"}, r"predict_path='/no/such/dir' does not exist"),
    ],
)
def test_argument_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        DigitsDataModule(**kwargs)


def test_samples_per_class_too_large() -> None:
    dm = DigitsDataModule(samples_per_class=200)
    with pytest.raises(DataError, match=r"samples_per_class=200 but the train split has fewer images for classes '0'"):
        dm.setup("fit")


def test_split_helpers_errors() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(DataError, match=r"cannot split 6 images of 2 classes .* test_fraction=0.1"):
        stratified_split(np.array([0, 0, 0, 0, 0, 1]), 0.0, 0.1, seed=0)
    parts = stratified_split(labels, 0.0, 0.34, seed=0)
    assert len(parts["test"]) == 3 and len(parts["val"]) == 0
    with pytest.raises(DataError, match=r"samples_per_class=4"):
        few_shot_indices(labels, np.arange(6), 4, 0, ["a", "b"])


def test_no_test_split_raises() -> None:
    dm = DigitsDataModule(test_fraction=0.0)
    dm.setup("test")
    with pytest.raises(DataError, match=r"no test split .* set test_fraction > 0"):
        dm.test_dataloader()


def test_shuffle_order_depends_on_seed_and_epoch_only() -> None:
    """Epoch e's order is a function of (seed, e): a run resumed at epoch e sees the straight run's batches."""
    from lightkit.data.base import EpochSeededSampler

    dm = DigitsDataModule(batch_size=32, image_size=8, seed=3)
    dm.setup("fit")

    def order(loader: torch.utils.data.DataLoader, epoch: int) -> list[int]:
        loader.sampler.set_epoch(epoch)
        return list(loader.sampler)

    straight = dm.train_dataloader()
    assert isinstance(straight.sampler, EpochSeededSampler)
    epochs = [order(straight, e) for e in range(3)]
    resumed = dm.train_dataloader()  # a fresh loader, as after loading a checkpoint at epoch 2
    assert order(resumed, 2) == epochs[2]
    assert epochs[0] != epochs[1] != epochs[2] and sorted(epochs[0]) == list(range(len(straight.dataset)))
    other_seed = DigitsDataModule(batch_size=32, image_size=8, seed=4)
    other_seed.setup("fit")
    assert order(other_seed.train_dataloader(), 0) != epochs[0]
    first_batch = next(iter(resumed))
    assert torch.equal(first_batch[0], straight.dataset.tensors[0][epochs[2][:32]])


def test_resume_sees_the_straight_runs_batches(tmp_path) -> None:
    """2 epochs straight == 1 epoch, checkpoint, resume for the second (shuffled digits, SGD momentum)."""
    from functools import partial

    from lightning.pytorch import Trainer

    from lightkit.models import ImageClassifier

    def fit(epochs: int, ckpt: str | None = None) -> tuple[ImageClassifier, Trainer]:
        torch.manual_seed(0)
        model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                                optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
        trainer = Trainer(max_epochs=epochs, limit_train_batches=4, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          accelerator="cpu", default_root_dir=tmp_path)
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=16, image_size=16, seed=1), ckpt_path=ckpt)
        return model, trainer

    straight, _ = fit(2)
    _, first = fit(1)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed, _ = fit(2, str(tmp_path / "epoch1.ckpt"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
