"""``LRScaling``: the large-batch rule as one switch (Goyal et al. 2017, https://arxiv.org/abs/1706.02677)."""

from __future__ import annotations

import math
import re
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from lightkit.functional.lr_scaling import (
    RULES,
    ScalingRule,
    global_batch,
    lr_scale,
    scale_param_groups,
    warmup_factor,
)

__all__ = ["LRScaling"]

_EPOCHS = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*ep\s*")


class LRScaling(Callback):
    """Scale every optimizer group's LR with the global batch, and warm up when the schedule does not.

    Goyal et al. (arXiv:1706.02677) trained ResNet-50 at batch 8k with no accuracy lost by two rules:
    multiply the LR by ``k = global_batch / reference_batch`` (``linear``; ``sqrt`` multiplies by
    ``sqrt(k)``, the usual choice for Adam-type optimizers) and ramp it up linearly from the reference LR
    over the first steps (their 5 epochs of 90). The LRs in the config are read as chosen at
    ``reference_batch`` samples per optimizer step; the run's global batch is
    ``batch_size x accumulate_grad_batches x devices x num_nodes`` (``batch_size`` read from the train
    loader), so adding GPUs, nodes or accumulation keeps the recipe without editing LRs.

    **Scaling** (``on_fit_start``, after ``configure_optimizers``): each param group's ``lr``,
    ``initial_lr``, ``max_lr`` and ``min_lr`` and each scheduler's ``base_lrs`` (and ``CyclicLR``'s
    ``max_lrs``) are multiplied by the same factor, so discriminative ratios are kept, a group at LR 0
    stays at 0 and every schedule (lightkit's, torch's chainable or closed-form ones) keeps its shape.
    Absolute floors (``eta_min``, ``ReduceLROnPlateau``'s ``min_lr``) are left as set.

    **Warmup** (per optimizer step): when the module's scheduler has none of its own (its first LR is
    below its peak: a ``warmup``, OneCycle, CLR, ``LinearLR``...), the LR of step ``t < W`` is multiplied by
    :func:`~lightkit.functional.lr_scaling.warmup_factor` ``(t, W, warmup_start)``, by default from ``1/k``
    (the reference LR) to 1. The factor is applied just before ``optimizer.step`` and taken off right
    after, so the scheduler never sees it; ``LearningRateMonitor`` logs the LR without it, this callback
    logs the factor as ``lr_scaling/warmup``.

    **Order with other callbacks.** List ``LRScaling`` before :class:`~lightkit.callbacks.FineTune`
    (FineTune reads the LRs it steers at fit start; ``setup`` refuses the other order, and
    FineTune's absolute ``lr_range``, which would undo the scaling). :class:`~lightkit.callbacks.LRRangeTest`
    sweeps at ``on_train_start``, after the scaling: with ``apply: true`` its suggestion replaces the
    scaled LRs (ratios kept) and is not scaled again, because it was found at this fit's batch per step
    (``batch_size x devices``: the sweep does not accumulate); the warmup, if any, still ramps up to it
    from ``warmup_start`` of it. An LR found at batch ``B`` in another run
    (``cli.py lr_find``) goes into the optimizer config with ``reference_batch: B``.

    **Resume.** ``state_dict`` holds what was applied. A checkpoint's optimizer and scheduler state,
    restored after ``on_fit_start``, already holds the scaled LRs, so a resumed fit is not scaled twice;
    the warmup is a function of the global step. Resuming at another global batch is refused.

    Args:
        rule: ``linear`` (LR x k), ``sqrt`` (LR x sqrt(k)) or ``none`` (LR as configured; warmup only if
            ``warmup_start`` is given).
        reference_batch: the global batch (samples per optimizer step) the configured LRs were chosen at.
        warmup: length of the added warmup: an ``int`` (optimizer steps), a ``float`` in (0, 1] (fraction
            of training) or ``"<n>ep"`` (epochs); 0 for none. At least one step when not 0.
        warmup_start: warmup factor at step 0, in [0, 1); ``None``: ``1 / scale`` (Goyal's: start at the
            reference LR), which means no warmup when the scale is <= 1.
        batch_size: samples per loader batch on one process; ``None`` reads it from the train loader
            (or the datamodule's ``batch_size``).

    Raises:
        ValueError: bad arguments; in ``setup`` a FineTune listed before this callback or with
            ``lr_range``; in ``on_fit_start`` an unreadable batch size, a warmup as long as training, or a
            resume at another global batch.

    Logged keys (per optimizer step, during the warmup): ``lr_scaling/warmup`` (the factor).
    """

    def __init__(
        self,
        rule: ScalingRule = "linear",
        reference_batch: int = 256,
        warmup: int | float | str = 0.05,
        warmup_start: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"LRScaling: rule={rule!r} is not one of {list(RULES)}; linear is Goyal et al.'s.")
        for name, value in (("reference_batch", reference_batch), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"LRScaling: {name}={value!r} must be an int >= 1 (samples); e.g. 256.")
        if warmup_start is not None and not 0.0 <= warmup_start < 1.0:
            raise ValueError(f"LRScaling: warmup_start={warmup_start} must be in [0, 1) (fraction of the scaled LR "
                             f"at step 0) or None for 1/scale.")
        _check_duration(warmup)
        self.rule, self.reference_batch, self.warmup = rule, reference_batch, warmup
        self.warmup_start, self.batch_size = warmup_start, batch_size
        self.applied: dict[str, Any] | None = None
        self._loaded: dict[str, Any] | None = None
        self._pending: list[tuple[dict[str, Any], Any, Any]] = []

    # -- checks --------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightkit.callbacks.finetune import FineTune  # only to check the order; never driven from here

        callbacks = list(trainer.callbacks)
        mine = next(i for i, c in enumerate(callbacks) if c is self)
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, FineTune):
                continue
            if i < mine:
                raise ValueError("LRScaling: FineTune is listed before LRScaling, so it would read the LRs before "
                                 "they are scaled and keep them unscaled; list LRScaling first in trainer.callbacks.")
            if cb.lr_range is not None:
                raise ValueError(f"LRScaling: FineTune(lr_range={cb.lr_range}) sets absolute LRs, which would undo "
                                 f"the scaling; use FineTune(lr_mults=...) or drop LRScaling.")

    # -- scaling -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending = []
        batch = global_batch(self._batch_size(trainer), trainer.accumulate_grad_batches, trainer.num_devices,
                             trainer.num_nodes)
        if self._loaded is not None and self._loaded["global_batch"] != batch:
            raise ValueError(
                f"LRScaling: the checkpoint's LRs were scaled for a global batch of {self._loaded['global_batch']}, "
                f"this fit has {batch}; resume with the same batch_size x accumulate_grad_batches x devices x "
                f"num_nodes, or start a new fit from the checkpoint's weights.")
        if self._loaded is None and trainer.ckpt_path is not None:
            rank_zero_warn("LRScaling: resuming from a checkpoint written without LRScaling; its optimizer state "
                           "(restored next) holds LRs that were not scaled.")
        self._loaded = None
        scale = lr_scale(batch, self.reference_batch, self.rule)
        steps, why = self._warmup_steps(trainer, scale)
        start = self._start(scale)
        for optimizer in trainer.optimizers:
            scale_param_groups(optimizer.param_groups, scale)
        for config in trainer.lr_scheduler_configs:
            _scale_scheduler(config.scheduler, scale)
        self.applied = {"global_batch": batch, "scale": scale, "rule": self.rule,
                        "reference_batch": self.reference_batch, "warmup_steps": steps, "warmup_start": start}
        parts = (f"{self._batch_size(trainer)} x {trainer.accumulate_grad_batches} x {trainer.num_devices} x "
                 f"{trainer.num_nodes}")
        rank_zero_info(
            f"LRScaling: global batch {batch} (batch x accumulation x devices x nodes = {parts}), reference "
            f"{self.reference_batch}, rule {self.rule}: LRs x {scale:.4g}; "
            + (f"warmup {steps} optimizer steps from {start:.4g} of the scaled LR." if steps else f"no warmup ({why}).")
        )

    def _batch_size(self, trainer: Trainer) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()  # as estimated_stepping_batches does
        loader = trainer.train_dataloader
        for owner in (loader, getattr(loader, "batch_sampler", None)):
            size = getattr(owner, "batch_size", None)
            if isinstance(size, int) and size > 0:
                return size
        size = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None else None
        if isinstance(size, int) and size > 0:
            return size
        raise ValueError(f"LRScaling: cannot read the batch size from the train loader ({type(loader).__name__}) "
                         f"or the datamodule; pass LRScaling(batch_size=...) (samples per loader batch, one process).")

    def _start(self, scale: float) -> float:
        return self.warmup_start if self.warmup_start is not None else min(1.0, 1.0 / scale)

    def _warmup_steps(self, trainer: Trainer, scale: float) -> tuple[int, str]:
        """Optimizer steps of the added warmup, and why there is none when 0."""
        if self.warmup in (0, 0.0):
            return 0, "warmup=0"
        if self._start(scale) >= 1.0:
            return 0, f"scale {scale:.4g} <= 1 and no warmup_start: nothing to warm up to"
        own = _warming_scheduler(trainer)
        if own is not None:
            return 0, f"the schedule {own} warms up already"
        total = float(trainer.estimated_stepping_batches)
        if isinstance(self.warmup, int):
            units = float(self.warmup)
        elif isinstance(self.warmup, float):
            if not math.isfinite(total) or total <= 0:
                raise ValueError(f"LRScaling: warmup={self.warmup} is a fraction of training, whose length is unknown; "
                                 f"set max_steps / max_epochs or give warmup in steps (int).")
            units = self.warmup * total
        else:
            batches = trainer.num_training_batches
            if not math.isfinite(batches):
                raise ValueError(f"LRScaling: warmup={self.warmup!r} in epochs needs a train loader with a length; "
                                 f"give it in steps (int).")
            epochs = float(_EPOCHS.fullmatch(self.warmup).group(1))  # type: ignore[union-attr]  # checked in __init__
            units = epochs * math.ceil(batches / trainer.accumulate_grad_batches)
        steps = max(1, round(units))
        if math.isfinite(total) and total > 0 and steps >= total:
            raise ValueError(f"LRScaling: warmup={self.warmup!r} is {steps} optimizer steps, not shorter than training "
                             f"({int(total)} steps); shorten it (Goyal et al.: 5 of 90 epochs).")
        return steps, ""

    # -- warmup, per optimizer step --------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        self._restore()  # manual optimization may step twice in one batch
        if not self.applied or trainer.global_step >= self.applied["warmup_steps"]:
            return
        factor = warmup_factor(trainer.global_step, self.applied["warmup_steps"], self.applied["warmup_start"])
        for group in optimizer.param_groups:
            old = group["lr"]
            if isinstance(old, Tensor):
                saved = old.clone()
                old.mul_(factor)
                self._pending.append((group, saved, old.clone()))
            else:
                group["lr"] = old * factor
                self._pending.append((group, old, group["lr"]))
        pl_module.log("lr_scaling/warmup", factor, on_step=True, on_epoch=False, batch_size=1)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._restore()  # before the scheduler steps (Lightning steps it after this hook) and checkpoints save

    def _restore(self) -> None:
        """Take the warmup factor off; an LR another callback has rewritten since is left as it is now."""
        for group, old, new in self._pending:
            current = group["lr"]
            if isinstance(current, Tensor):
                if bool((current == new).all()):
                    current.copy_(old)
            elif current == new:
                group["lr"] = old
        self._pending = []

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"applied": dict(self.applied) if self.applied else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        applied = state_dict.get("applied")
        self.applied = dict(applied) if applied else None
        self._loaded = dict(applied) if applied else None


def _check_duration(value: Any) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or \
         (isinstance(value, float) and 0.0 <= value <= 1.0) or (isinstance(value, str) and _EPOCHS.fullmatch(value))
    if not ok:
        raise ValueError(f"LRScaling: warmup={value!r} is not a duration; use an int >= 0 (optimizer steps), a "
                         f"float in (0, 1] (fraction of training) or '<n>ep' (epochs), 0 for none.")


def _scale_scheduler(scheduler: Any, factor: float) -> None:
    for attr in ("base_lrs", "max_lrs"):  # max_lrs: torch CyclicLR's peaks
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            setattr(scheduler, attr, [v * factor for v in values])
    for child in _children(scheduler):
        _scale_scheduler(child, factor)


def _children(scheduler: Any) -> list[Any]:
    # torch's SequentialLR and ChainedScheduler keep their parts in `_schedulers`, with no public accessor;
    # read (never written) here only, so their closed-form parts (CosineAnnealingLR...) see the scaled base_lrs.
    return list(getattr(scheduler, "_schedulers", None) or [])


def _warming_scheduler(trainer: Trainer) -> str | None:
    """Name of a module scheduler whose first LR is below its peak (it has a warmup of its own), else None."""
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        bases = getattr(scheduler, "base_lrs", None) or []
        peaks = getattr(scheduler, "max_lrs", None) or []
        for j, group in enumerate(scheduler.optimizer.param_groups):
            refs = [group.get("initial_lr"), group.get("max_lr"),
                    bases[j] if j < len(bases) else None, peaks[j] if j < len(peaks) else None]
            top = max((float(r) for r in refs if isinstance(r, (int, float)) and not isinstance(r, bool)), default=0.0)
            if top > 0 and float(group["lr"]) < top * (1 - 1e-9):
                return type(scheduler).__name__
    return None
