"""A linear probe on raw pixels: a LightningModule cheap enough to grid-search LRs in a test.

Softmax regression of the flattened image, with the same constructor links (``num_classes``,
``in_chans``, ``class_names``) and logged keys (``val/acc``, ``val/loss``) as ``ImageClassifier``,
so a lightkit config can name it as ``model.class_path`` and ``search`` can tune it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn


class PixelProbe(LightningModule):
    """Softmax regression on the flattened ``image_size`` x ``image_size`` input.

    Args:
        num_classes: classes (linked from the data module by the CLI).
        in_chans: input channels (linked).
        image_size: input side in pixels.
        class_names: linked from the data module; unused.
        optimizer: optimizer factory called with the parameters.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 8,
                 class_names: list[str] | None = None, optimizer: OptimizerCallable = torch.optim.SGD) -> None:
        super().__init__()
        self.linear = nn.Linear(in_chans * image_size * image_size, num_classes)
        self.optimizer_factory = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True,
                 batch_size=len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
