"""A real Lightning checkpoint of a tiny ImageClassifier (timm ``test_resnet``, 32x32 gray digits)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch import nn

from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier


def digits_checkpoint(root: Path) -> Path:
    """Fit one step on digits (so the checkpoint holds the data module's preprocessing and class names),
    give every BatchNorm random running statistics (so folding changes the weights), save ``root/digits.ckpt``."""
    torch.manual_seed(0)
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False, accelerator="cpu",
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=root)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16, image_size=32))
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    path = root / "digits.ckpt"
    trainer.save_checkpoint(path)
    return path
