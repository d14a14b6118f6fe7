"""lightkit.restore: a detour through training (steps, random draws, metric updates) leaves no trace."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightkit.restore import FitSnapshot, loader_generators, module_metrics, restored
from tests.helpers.tiny_fit import tiny_loader, tiny_model


def _state(trainer: Trainer, model: LightningModule) -> dict[str, Any]:
    opt = trainer.optimizers[0]
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "optim": {
            k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()}
            for k, v in opt.state_dict()["state"].items()
        },
        "lrs": [g["lr"] for g in opt.param_groups],
        "rng": (torch.rand(3), np.random.rand(3), random.random()),
        "metrics": [{k: v.clone() for k, v in m.metric_state.items()} for m in module_metrics(model)],
        "order": [g.initial_seed() for g in loader_generators(trainer.train_dataloader)],
    }


def _equal(a: Any, b: Any) -> bool:
    if torch.is_tensor(a):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class Detour(Callback):
    """After two steps: snapshot, train three steps with a doubled LR and draw random numbers, restore."""

    def __init__(self) -> None:
        self.before: dict[str, Any] | None = None
        self.after: dict[str, Any] | None = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != 2 or self.before is not None:
            return
        opt = trainer.optimizers[0]
        rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        self.before = _state(trainer, pl_module)
        (
            torch.set_rng_state(rng[0]),
            np.random.set_state(rng[1]),
            random.setstate(rng[2]),
        )  # _state drew numbers
        with restored(trainer, pl_module, opt) as snapshot:
            assert isinstance(snapshot, FitSnapshot)
            for g in opt.param_groups:
                g["lr"] *= 2
            for _ in range(3):
                loss = pl_module.training_step(batch, 0)
                opt.zero_grad()
                loss.backward()
                opt.step()
            torch.rand(5), np.random.rand(5), random.random()
        self.after = _state(trainer, pl_module)


def test_restored_puts_back_every_state(tmp_path: Path) -> None:
    detour = Detour()
    trainer = Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=[detour], limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(tiny_model(), tiny_loader(16))
    assert detour.before is not None and detour.after is not None
    assert any(m for m in detour.before["metrics"]) and detour.before["optim"], (
        "nothing to restore: test too weak"
    )
    for key in detour.before:
        assert _equal(detour.before[key], detour.after[key]), key


def test_restore_on_error_and_generators_of_shuffled_loaders(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    loader = torch.utils.data.DataLoader(list(range(8)), shuffle=True, generator=g)
    assert loader_generators(loader) == [g] and loader_generators({"train": loader}) == [g]
    model = torch.nn.Linear(2, 1)

    class Fake:
        lr_scheduler_configs: list[Any] = []
        train_dataloader = loader

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weight = model.weight.detach().clone()
    state = g.get_state()
    with pytest.raises(RuntimeError, match="boom"), restored(Fake(), model, opt):  # type: ignore[arg-type]
        model.weight.data.add_(1.0)
        list(loader)
        raise RuntimeError("boom")
    assert torch.equal(model.weight, weight) and torch.equal(g.get_state(), state)
