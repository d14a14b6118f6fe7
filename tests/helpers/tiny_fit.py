"""A tiny deterministic ImageClassifier fit (timm ``test_resnet``, 32x32, 1 channel) for callback tests."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightkit.models.classifier import ImageClassifier


def tiny_model(lr: float = 0.05, **kwargs: Any) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                           optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9), **kwargs)


def tiny_loader(n: int = 12, batch_size: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def tiny_trainer(tmp_path: Any, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    defaults = {"max_steps": 6, "limit_val_batches": 1, "num_sanity_val_steps": 1, "enable_checkpointing": False}
    return Trainer(logger=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks,
                   enable_progress_bar=False, enable_model_summary=False, **{**defaults, **kwargs})


def tiny_fit(model: LightningModule, callbacks: list[Callback], tmp_path: Any, ckpt_path: str | None = None,
             **kwargs: Any) -> Trainer:
    trainer = tiny_trainer(tmp_path, callbacks, **kwargs)
    trainer.fit(model, tiny_loader(), tiny_loader(8, 4, seed=1), ckpt_path=ckpt_path)
    return trainer


class Crash(Callback):
    """Raises before optimizer step ``at_step`` (0-based) to simulate a crash."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


class WeightRecorder(Callback):
    """Records the module's float state after every optimizer step (place it before the averaging callback)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.lrs.append([g["lr"] for opt in trainer.optimizers for g in opt.param_groups])

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def assert_states_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **kw: Any) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=lambda m, key=key: f"{key}: {m}", **kw)
