"""A callback for timing a CLI run from outside: ``--trainer.callbacks+=first_step_mark.FirstStepMark
--trainer.callbacks.path FILE`` (with ``benchmarks/`` on ``PYTHONPATH``) writes the wall-clock time of the
first optimizer step of any kind to FILE. The LR range test's steps count: they are real optimizer steps."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim.optimizer import register_optimizer_step_post_hook


class FirstStepMark(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self._handle = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        def first(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
            if not Path(self.path).exists():
                Path(self.path).write_text(repr(time.time()))

        self._handle = register_optimizer_step_post_hook(first)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._handle is not None:
            self._handle.remove()
