"""A callback that writes a marker file and sleeps at a given optimizer step: a test kills the process there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class PauseAt(Callback):
    """At the start of optimizer step ``step``, write ``marker`` and sleep ``seconds`` (the test's window to kill)."""

    def __init__(self, step: int, marker: str, seconds: float = 120.0) -> None:
        self.step, self.marker, self.seconds = step, marker, seconds

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(self.step))
            time.sleep(self.seconds)


class PoisonAt(Callback):
    """At the start of optimizer step ``step``, fill every weight with NaN: a divergence at a known step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for param in pl_module.parameters():
                    param.fill_(float("nan"))
