"""Exact restore of a fit's mutable state, for callbacks that train a little and must leave no trace.

The LR range test sweeps the LR for a hundred optimizer steps before the fit; a probe, a warm-up
trial or a what-if evaluation does the same kind of thing. Afterwards the fit must continue
bit-identical to one that never saw the detour, which takes more than the weights: BN running
statistics, gradients, the optimizer's and the schedulers' state, every random generator (torch,
CUDA, numpy, python, the train loader's own ``torch.Generator``\\ s, which decide the data order) and
the accumulated states of the module's torchmetrics ``Metric``\\ s. :class:`FitSnapshot` copies all of
them; :func:`restored` puts them back whatever happens in between::

    with restored(trainer, pl_module, optimizer):
        ...  # train, evaluate, draw random numbers

Copies live in host or device memory as the originals do (one extra copy of the model and optimizer
state). No private trainer attribute is read or written.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

__all__ = ["FitSnapshot", "loader_generators", "module_metrics", "restored"]


class FitSnapshot:
    """Everything a detour through training changes, copied at construction and written back by
    :meth:`restore`.

    Args:
        trainer: the running trainer (its scheduler configs and train loader are read).
        pl_module: the module whose weights, buffers, gradients and metric states are copied.
        optimizer: the optimizer whose state (moments, step counts, param-group values) is copied.
    """

    def __init__(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.pl_module, self.optimizer = pl_module, optimizer
        self.model = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}  # weights + BN stats
        self.grads = [
            (p, None if p.grad is None else p.grad.detach().clone()) for p in pl_module.parameters()
        ]
        self.optim = copy.deepcopy(optimizer.state_dict())
        self.schedulers = [
            (c.scheduler, copy.deepcopy(c.scheduler.state_dict())) for c in trainer.lr_scheduler_configs
        ]
        self.rng = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
                    torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
        self.generators = [(g, g.get_state()) for g in loader_generators(trainer.train_dataloader)]
        self.metrics = [(m, copy.deepcopy(m.metric_state)) for m in module_metrics(pl_module)]

    def restore(self) -> None:
        """Write every copied state back (it can be called more than once)."""
        with torch.no_grad():
            self.pl_module.load_state_dict(self.model)
        for p, grad in self.grads:
            p.grad = None if grad is None else grad.clone()
        self.optimizer.load_state_dict(copy.deepcopy(self.optim))
        for scheduler, state in self.schedulers:
            scheduler.load_state_dict(copy.deepcopy(state))
        torch_state, np_state, py_state, cuda_state = self.rng
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        for generator, state in self.generators:
            generator.set_state(state)
        for metric, state in self.metrics:
            metric.reset()
            for name, value in copy.deepcopy(state).items():
                setattr(metric, name, value)


@contextlib.contextmanager
def restored(
    trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
) -> Iterator[FitSnapshot]:
    """Snapshot on entry, restore on exit (also when the body raises)."""
    snapshot = FitSnapshot(trainer, pl_module, optimizer)
    try:
        yield snapshot
    finally:
        snapshot.restore()


def loader_generators(loaders: Any) -> list[torch.Generator]:
    """The ``torch.Generator``\\ s a loader (or a list/dict of them) draws its order from."""
    found: list[torch.Generator] = []
    items = (
        loaders.values()
        if isinstance(loaders, dict)
        else loaders
        if isinstance(loaders, (list, tuple))
        else [loaders]
    )
    for loader in items:
        if not isinstance(loader, DataLoader):
            continue
        sampler = getattr(loader.batch_sampler, "sampler", None)
        for owner in (loader, loader.sampler, sampler):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


def module_metrics(pl_module: torch.nn.Module) -> list[Any]:
    """The torchmetrics ``Metric`` submodules of ``pl_module`` (their states accumulate across steps)."""
    from torchmetrics import Metric

    return [m for m in pl_module.modules() if isinstance(m, Metric)]
