"""The data modules' loaders: batched reads of the in-memory splits and the pin_memory default."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightkit.data import DigitsDataModule
from lightkit.data.base import EpochSeededSampler, InMemoryTensorDataset, batch_collate


def test_batched_loader_gives_the_default_collate_batches() -> None:
    dm = DigitsDataModule(batch_size=50, image_size=16, seed=3)
    dm.setup("fit")
    fast = dm.train_dataloader()
    assert isinstance(fast.dataset, InMemoryTensorDataset) and fast.collate_fn is batch_collate
    assert type(dm._datasets["train"]) is TensorDataset  # the stored split stays a plain TensorDataset
    slow = DataLoader(dm._datasets["train"], batch_size=50, sampler=EpochSeededSampler(dm._datasets["train"], 3))
    batches = list(fast)
    assert len(batches) == len(slow) == 26  # 1797 * 0.7 = 1257 images, the last batch short
    for got, want in zip(batches, slow, strict=True):
        assert isinstance(got, list) and len(got) == 2  # a list, as default_collate gives: mixing edits it in place
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        assert torch.equal(got[1], want[1])
    assert len(batches[-1][1]) == 1257 - 25 * 50


def test_pin_memory_follows_the_accelerator_unless_given(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=32)
    assert dm.pin_memory is None and not dm.train_dataloader().pin_memory  # no trainer: off
    dm.trainer = Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    assert not dm.val_dataloader().pin_memory  # CPU trainer: off
    assert DigitsDataModule(batch_size=32, pin_memory=True).train_dataloader().pin_memory
