"""``SnapshotEnsemble``: M cosine cycles with restarts, a snapshot on disk at each cycle's end, their mean
softmax evaluated."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, RandomSampler

from lightkit.functional.ensemble import member_probs, snapshot_boundaries, snapshot_lr_factor

__all__ = ["SnapshotEnsemble"]

_NORMS = (nn.modules.batchnorm._BatchNorm,)  # what torch's update_bn recomputes


class _FirstPassTargets:
    """Re-iterable first ``limit`` batches of a loader that records the targets on its first pass."""

    def __init__(self, loader: Any, limit: int | float) -> None:
        self.loader, self.limit = loader, limit
        self.targets: list[torch.Tensor] = []
        self._first = True

    def __iter__(self) -> Iterator[Any]:
        batches = self.loader if math.isinf(self.limit) else itertools.islice(self.loader, int(self.limit))
        for batch in batches:
            if self._first:
                self.targets.append(batch[1])
            yield batch
        self._first = False


class SnapshotEnsemble(Callback):
    """Snapshot ensembles, "train 1, get M for free" (Huang et al. 2017, https://arxiv.org/abs/1704.00109).

    The fit's optimizer steps are split into ``cycles`` equal cycles; within each the LR of every
    parameter group anneals from its base LR (torch's ``initial_lr``: the LR the optimizer was built
    with) by a half cosine to ``final_factor`` times it, and restarts (eq. 2 of the paper; see
    :func:`lightkit.functional.ensemble.snapshot_lr_factor`). The callback sets the LRs itself before
    every optimizer step, so discriminative per-group LR ratios are kept; the module must therefore
    not configure an LR scheduler. At the end of each cycle (the LR at its minimum) the weights are
    written to ``<dirpath>/snapshot_{k}.pt`` (k = 1..cycles, rank zero; a Lightning-style file with
    ``state_dict`` and ``hyper_parameters``, so ``ImageClassifier.load_from_checkpoint`` and
    :func:`lightkit.ensemble.ensemble_predict` read it), optionally with BatchNorm statistics
    recomputed for those weights first.

    After each new snapshot, the next validation evaluates the ensemble of the snapshots so far: each
    snapshot is loaded into the module in turn (the memory of one model; the current weights are kept
    on the CPU and restored), the validation batches predicted, and the mean softmax scored. At test
    time the ensemble of all snapshots is scored on the test batches.

    Args:
        cycles: number of cosine cycles = snapshots M, >= 1 (the paper uses 4-6 on CIFAR).
        final_factor: factor of the base LR each cycle anneals to, in [0, 1).
        keep_last: keep only the last k snapshots on disk and in the ensemble; ``None``: all.
        recompute_bn: recompute BatchNorm statistics for each snapshot before saving it (torch
            ``update_bn`` over ``bn_batches`` seeded random training batches; the training run keeps
            its own statistics).
        bn_batches: training batches for that recomputation, >= 1.
        dirpath: folder of the snapshots; default ``<trainer.log_dir>/snapshots``.
        evaluate_every_validation: score the ensemble at every validation, not only after a new snapshot
            (M extra passes over the validation batches each time).
        seed: seed of the BatchNorm recomputation's batch order.

    Raises:
        ValueError: bad arguments; in ``on_fit_start``: an LR scheduler is configured, the fit has no
            finite length, or it has fewer optimizer steps than cycles.

    Logged keys: ``snapshot/ensemble_acc``, ``snapshot/ensemble_nll``, ``snapshot/count`` (validation,
    dataloader 0), ``snapshot/test_ensemble_acc``, ``snapshot/test_ensemble_nll`` (test, dataloader 0).
    """

    def __init__(
        self,
        cycles: int = 4,
        final_factor: float = 0.0,
        keep_last: int | None = None,
        recompute_bn: bool = False,
        bn_batches: int = 20,
        dirpath: str | None = None,
        evaluate_every_validation: bool = False,
        seed: int = 0,
    ) -> None:
        if cycles < 1:
            raise ValueError(f"SnapshotEnsemble: cycles={cycles} must be >= 1 (the number of snapshots, e.g. 4).")
        if not 0.0 <= final_factor < 1.0:
            raise ValueError(f"SnapshotEnsemble: final_factor={final_factor} must be in [0, 1) (0: anneal to zero).")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"SnapshotEnsemble: keep_last={keep_last} must be >= 1, or None to keep every snapshot.")
        if bn_batches < 1:
            raise ValueError(f"SnapshotEnsemble: bn_batches={bn_batches} must be >= 1 (training batches).")
        self.cycles = cycles
        self.final_factor = final_factor
        self.keep_last = keep_last
        self.recompute_bn = recompute_bn
        self.bn_batches = bn_batches
        self.dirpath = dirpath
        self.evaluate_every_validation = evaluate_every_validation
        self.seed = seed
        self.snapshots: list[str] = []
        self.cycles_written: list[int] = []
        self._dir: str | None = None
        self._total_steps = 0
        self._boundaries: list[int] = []
        self._evaluated: list[str] | None = None
        self._restore_state = True

    # -- setup -------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # A new fit starts a new ensemble; a resume restores the list in load_state_dict (after setup).
        self.snapshots, self.cycles_written, self._evaluated = [], [], None
        folder = self.dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "snapshots")
        self._dir = trainer.strategy.broadcast(folder, src=0)  # loggers may name versions on rank zero only

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            names = [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs]
            raise ValueError(f"SnapshotEnsemble: the module also configures LR scheduler(s) {names}; the callback "
                             "sets the LR itself, so remove the module's lr_scheduler (e.g. "
                             "model.lr_scheduler: null).")
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(f"SnapshotEnsemble: the fit has no finite length (estimated_stepping_batches={total}); "
                             f"set Trainer max_steps or max_epochs.")
        self._total_steps = int(total)
        try:
            self._boundaries = snapshot_boundaries(self._total_steps, self.cycles)
        except ValueError as err:
            raise ValueError(f"SnapshotEnsemble: {err}") from None
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])

    # -- training ----------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """The factor of each group's base LR used for optimizer step ``step`` (0-based)."""
        return snapshot_lr_factor(step, self._total_steps, self.cycles, self.final_factor)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        factor = self.lr_factor(trainer.global_step)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step in self._boundaries:
            cycle = self._boundaries.index(step) + 1
            if cycle not in self.cycles_written:
                self._save_snapshot(trainer, pl_module, cycle)

    def _save_snapshot(self, trainer: Trainer, pl_module: LightningModule, cycle: int) -> None:
        assert self._dir is not None
        path = str(Path(self._dir) / f"snapshot_{cycle}.pt")
        stash = None
        if self.recompute_bn and any(isinstance(m, _NORMS) for m in pl_module.modules()):
            stash = {k: v.clone() for k, v in pl_module.named_buffers()}
            update_bn(self._bn_batches(trainer, cycle), pl_module, device=pl_module.device)
        if trainer.is_global_zero:
            payload: dict[str, Any] = {
                "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()},
                "hyper_parameters": dict(pl_module.hparams),
                "pytorch-lightning_version": lightning.__version__,
                "snapshot": {
                    "cycle": cycle, "cycles": self.cycles, "global_step": trainer.global_step,
                    "lr": [g["lr"] for opt in trainer.optimizers for g in opt.param_groups],
                    "bn_recomputed": stash is not None,
                },
            }
            pl_module.on_save_checkpoint(payload)  # what the module adds for inference (preprocessing ...)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, path)
        if stash is not None:
            buffers = dict(pl_module.named_buffers())
            for name, value in stash.items():
                buffers[name].copy_(value)
        trainer.strategy.barrier("snapshot_saved")
        self.snapshots.append(path)
        self.cycles_written.append(cycle)
        if self.keep_last is not None and len(self.snapshots) > self.keep_last:
            old = self.snapshots.pop(0)
            if trainer.is_global_zero and os.path.exists(old):
                os.remove(old)
        rank_zero_info(f"SnapshotEnsemble: wrote snapshot {cycle}/{self.cycles} at step "
                       f"{trainer.global_step} to {path}")

    def _bn_batches(self, trainer: Trainer, cycle: int) -> Iterator[Any]:
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise ValueError(f"SnapshotEnsemble: recompute_bn needs one DataLoader for training, got "
                             f"{type(loader).__name__}; set recompute_bn=False.")
        # A fresh loader (no workers) with a seeded order: the live training iterator is left alone and
        # every DDP rank draws the same batches, so the ranks' snapshots agree.
        generator = torch.Generator().manual_seed(self.seed + cycle)
        fresh = DataLoader(loader.dataset, batch_size=loader.batch_size or 1, collate_fn=loader.collate_fn,
                           sampler=RandomSampler(loader.dataset, generator=generator))
        return itertools.islice(fresh, self.bn_batches)

    # -- evaluation --------------------------------------------------------------------------
    def _score(self, trainer: Trainer, pl_module: LightningModule, loaders: Any, limits: list[Any]) -> dict[str, float]:
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        limit = limits[0] if limits else float("inf")
        batches = _FirstPassTargets(loader, limit)
        probs = member_probs(pl_module, self.snapshots, batches).mean(dim=0)
        target = torch.cat(batches.targets).to(probs.device)
        true_p = probs.gather(1, target.view(-1, 1)).squeeze(1).clamp_min(torch.finfo(torch.float32).tiny)
        sums = torch.stack([(probs.argmax(1) == target).sum().double(), -true_p.log().sum().double(),
                            torch.tensor(float(len(target)), dtype=torch.float64, device=probs.device)])
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        count = max(float(sums[2]), 1.0)
        return {"acc": float(sums[0]) / count, "nll": float(sums[1]) / count}

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.snapshots:
            return
        if not self.evaluate_every_validation and self._evaluated == self.snapshots:
            return
        scores = self._score(trainer, pl_module, trainer.val_dataloaders, list(trainer.num_val_batches))
        self._evaluated = list(self.snapshots)
        pl_module.log("snapshot/ensemble_acc", scores["acc"])
        pl_module.log("snapshot/ensemble_nll", scores["nll"])
        pl_module.log("snapshot/count", float(len(self.snapshots)))

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.snapshots:
            return
        scores = self._score(trainer, pl_module, trainer.test_dataloaders, list(trainer.num_test_batches))
        pl_module.log("snapshot/test_ensemble_acc", scores["acc"])
        pl_module.log("snapshot/test_ensemble_nll", scores["nll"])

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": list(self.snapshots), "cycles_written": list(self.cycles_written), "dirpath": self._dir}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called just before load_state_dict. Outside fit (the test of the best checkpoint after fit) an
        # instance that already wrote snapshots keeps its own, complete list; an earlier checkpoint's is shorter.
        self._restore_state = trainer.state.fn == TrainerFn.FITTING or not self.snapshots

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore, self._restore_state = self._restore_state, True
        if not restore:
            return
        self.snapshots = list(state_dict["snapshots"])
        self.cycles_written = [int(c) for c in state_dict["cycles_written"]]
        self._dir = state_dict.get("dirpath") or self._dir
