"""``FineTune``: freeze, unfreeze, gradual unfreezing and discriminative LRs over layer groups built once."""

from __future__ import annotations

import math
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from lightkit.functional.groups import FREEZE_STRATEGIES as _STRATEGIES
from lightkit.functional.groups import (
    LayerGroups,
    PhaseSchedule,
    batchnorm_modules,
    compile_patterns,
    geometric_lrs,
    group_by_modules,
    owners,
    phase_bounds,
    trainable_groups,
)
from lightkit.lr_schedulers import FactorScheduler

__all__ = ["FineTune", "PhaseSchedule"]

Strategy = Literal["no_freeze", "freeze", "freeze_unfreeze", "gradual"]
_UNFREEZING = ("freeze_unfreeze", "gradual")


class FineTune(Callback):
    """Transfer learning by layer groups: freezing, (gradual) unfreezing, discriminative LRs, per-phase cycles.

    Gradual unfreezing and discriminative LRs follow ULMFiT (Howard & Ruder 2018,
    https://arxiv.org/abs/1801.06146); ``freeze_unfreeze`` with a ``one_cycle`` :class:`PhaseSchedule`
    per phase is fastai's ``fine_tune``. Layer groups come from ``pl_module.layer_groups()`` (lightkit:
    timm's ``group_matcher``, stem to head) or from ``groups`` for any other LightningModule.

    **Groups are built once.** Optimizer param groups are never added: freezing sets ``requires_grad``
    to False (the gradient stays ``None``, so AdamW/SGD skip the parameter entirely: no weight decay,
    no moment updates) and sets the LR of optimizer groups lying wholly in frozen layer groups to 0.
    LearningRateMonitor, checkpoints and DDP see the same groups throughout.

    **LRs.** In ``on_fit_start`` (after ``configure_optimizers``, before the first step and before a
    checkpoint's optimizer/scheduler state is restored, which then holds the same values) and at every
    unfreeze, each optimizer param group ``j`` of layer group ``g`` gets the base LR ``b_j = 0`` when
    ``g`` is frozen, else ``B_g * lr_scale(phase)``, where ``B_g`` is ``lr_range``'s geometric value for
    ``g``, else ``lr_j * lr_mults[g]`` (``lr_j``: the LR the optimizer was built with). Groups spanning
    several layer groups, or none, get ``lr_j * lr_scale`` and are never zeroed (their frozen parameters
    still stay fixed: no gradient); discriminative LRs refuse them. The callback writes ``initial_lr = b_j``, the
    scheduler's ``base_lrs[j] = b_j`` and ``lr = b_j * s``, with ``s`` the factor of this callback's
    ``schedule`` at the step (rewritten every step), else of the module's
    :class:`lightkit.lr_schedulers.FactorScheduler` (which keeps multiplying ``base_lrs``), else 1.

    **BatchNorm.** With ``train_bn=False`` the BN layers of frozen groups are put in eval mode after
    Lightning's ``train()`` (every epoch and batch), so their running statistics do not move. With
    ``train_bn=True`` they train, affine parameters included, and their optimizer groups keep their LR.

    **Resume.** ``state_dict`` holds the phase, the group names and the step each phase began; the LR of
    every step is a function of the global step, so a resumed run equals a straight one.

    Args:
        strategy: ``no_freeze`` (discriminative LRs only), ``freeze`` (all groups but the last frozen for
            the whole fit: a linear probe), ``freeze_unfreeze`` (all unfrozen at ``unfreeze_at``) or
            ``gradual`` (one more group unfrozen from the head towards the stem at each milestone).
        unfreeze_at: ``freeze_unfreeze``: when to unfreeze (default 1). ``gradual``: a list of
            increasing milestones, one per group to unfreeze, or an int ``k`` (default 1): every ``k``
            units until all groups train or training ends. In ``unit`` units, >= 1.
        unit: ``epoch`` or ``step`` (optimizer steps), the unit of ``unfreeze_at``.
        train_bn: train the BatchNorm layers of frozen groups (statistics and affine parameters).
        lr_range: ``[stem_lr, head_lr]``: absolute base LRs spread geometrically over the groups.
        lr_mults: group name -> multiplier of the optimizer's LR (groups left out: 1).
        groups: group name -> module names or regexes (``re.fullmatch`` on ``named_modules()`` names),
            stem to head, for modules without ``layer_groups()``.
        schedule: one :class:`PhaseSchedule` for every phase, or one per phase; ``None``: LRs are left
            to the module's scheduler. Needs no scheduler in ``configure_optimizers``.

    Raises:
        ValueError: in ``__init__`` for a bad argument; in ``setup`` / ``on_fit_start`` for groups that do
            not fit the module, a milestone past the end of training, a scheduler this callback cannot
            steer, or DDP without ``find_unused_parameters`` while unfreezing.

    Logged keys (per step): ``finetune/phase`` and ``finetune/lr/<group>``, the LR of each layer group
    that has an optimizer param group of its own (``LearningRateMonitor`` works too: the groups never change).
    """

    def __init__(
        self,
        strategy: Strategy = "freeze_unfreeze",
        unfreeze_at: int | list[int] | None = None,
        unit: Literal["epoch", "step"] = "epoch",
        train_bn: bool = False,
        lr_range: list[float] | None = None,
        lr_mults: dict[str, float] | None = None,
        groups: dict[str, list[str]] | None = None,
        schedule: list[PhaseSchedule] | None = None,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"FineTune: strategy={strategy!r} is not one of {list(_STRATEGIES)}.")
        if unit not in ("epoch", "step"):
            raise ValueError(f"FineTune: unit={unit!r} is not one of 'epoch', 'step'.")
        if unfreeze_at is not None:
            if strategy not in _UNFREEZING:
                raise ValueError(f"FineTune: unfreeze_at={unfreeze_at!r} is unused by strategy={strategy!r}; drop it.")
            marks = [unfreeze_at] if isinstance(unfreeze_at, int) else list(unfreeze_at)
            if strategy == "freeze_unfreeze" and not isinstance(unfreeze_at, int):
                raise ValueError(f"FineTune: unfreeze_at={unfreeze_at!r} must be one int for freeze_unfreeze; "
                                 f"use strategy='gradual' for several milestones.")
            if not marks or any(m < 1 for m in marks) or any(b <= a for a, b in zip(marks, marks[1:], strict=False)):
                raise ValueError(f"FineTune: unfreeze_at={unfreeze_at!r} must be >= 1 and strictly "
                                 f"increasing ({unit}s).")
        if lr_range is not None and lr_mults is not None:
            raise ValueError("FineTune: lr_range and lr_mults both given; choose one way to set discriminative LRs.")
        if lr_range is not None and (len(lr_range) != 2 or not 0 < lr_range[0] <= lr_range[1]):
            raise ValueError(f"FineTune: lr_range={lr_range} must be [stem_lr, head_lr] with 0 < stem_lr <= head_lr.")
        if lr_mults is not None and any(not v > 0 for v in lr_mults.values()):
            raise ValueError(f"FineTune: lr_mults={lr_mults} must all be > 0; freeze groups with the strategy instead.")
        if groups is not None:
            try:
                compile_patterns(groups)
            except ValueError as err:
                raise ValueError(f"FineTune: {err}") from err
        if schedule is not None and not schedule:
            raise ValueError("FineTune: schedule=[] gives no phase; give one PhaseSchedule or None.")
        self.strategy, self.unfreeze_at, self.unit, self.train_bn = strategy, unfreeze_at, unit, train_bn
        self.lr_range, self.lr_mults, self.groups = lr_range, lr_mults, groups
        self.schedule = [PhaseSchedule(**s) if isinstance(s, dict) else s for s in schedule] if schedule else None
        self.phase = 0
        self.phase_starts: list[int] = [0]
        self._loaded_names: list[str] | None = None
        self._groups: LayerGroups = []
        self._requires_grad: dict[int, bool] = {}

    # -- groups -------------------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        """Layer group names, stem to head (empty before ``setup``)."""
        return [name for name, _ in self._groups]

    def trainable(self, phase: int | None = None) -> list[str]:
        """Names of the layer groups that train in ``phase`` (default: the current one)."""
        return trainable_groups(self.strategy, self.group_names, self.phase if phase is None else phase)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.groups is not None:
            try:
                self._groups = group_by_modules(pl_module, self.groups)
            except ValueError as err:
                raise ValueError(f"FineTune: {err}") from err
        elif callable(getattr(pl_module, "layer_groups", None)):
            self._groups = [(name, list(params)) for name, params in pl_module.layer_groups()]
        else:
            raise ValueError(f"FineTune: {type(pl_module).__name__} has no layer_groups(); pass groups= "
                             f"(group name -> module names or regexes, stem to head).")
        names = self.group_names
        if self.strategy != "no_freeze" and len(names) < 2:
            raise ValueError(f"FineTune: strategy={self.strategy!r} needs >= 2 layer groups, found {names}; "
                             f"split the model with groups= or use strategy='no_freeze'.")
        unknown = sorted(set(self.lr_mults or {}) - set(names))
        if unknown:
            raise ValueError(f"FineTune: lr_mults names unknown groups {unknown}; the groups are {names}.")
        if isinstance(self.unfreeze_at, list) and self.strategy == "gradual" and len(self.unfreeze_at) > len(names) - 1:
            raise ValueError(f"FineTune: unfreeze_at has {len(self.unfreeze_at)} milestones for {len(names) - 1} "
                             f"groups to unfreeze ({names[:-1]}); give at most {len(names) - 1}.")
        self.phase, self.phase_starts, self._loaded_names = 0, [0], None
        self._requires_grad = {id(p): p.requires_grad for _, ps in self._groups for _, p in ps}
        self._bn = batchnorm_modules(pl_module, self._groups)
        self._bn_params = {id(p) for mods in self._bn.values() for m in mods for p in m.parameters()}
        if self.strategy == "freeze":
            self._set_requires_grad()  # before DDP wraps the model: it then never syncs the frozen parameters

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # leave the module as found, so it can be fitted again with another strategy
            for _, params in self._groups:
                for _, p in params:
                    p.requires_grad_(self._requires_grad.get(id(p), True))

    # -- fit start: plan, checks, apply -------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._loaded_names is not None and self._loaded_names != self.group_names:
            raise ValueError(f"FineTune: the checkpoint was written with groups {self._loaded_names}, this model "
                             f"has {self.group_names}; resume with the same model and groups.")
        model = trainer.strategy.model
        if (self.strategy in _UNFREEZING and isinstance(model, DistributedDataParallel)
                and not model.find_unused_parameters):
            raise ValueError(f"FineTune: strategy={self.strategy!r} unfreezes parameters mid-fit, which DDP only syncs "
                             "with find_unused_parameters=True; "
                             "use Trainer(strategy='ddp_find_unused_parameters_true').")
        self._plan(trainer)
        if self.phase > len(self._milestones):
            raise ValueError(f"FineTune: the checkpoint is in phase {self.phase}, but this fit has only "
                             f"{len(self._milestones) + 1} phases; "
                             "resume with the same unfreeze_at and trainer limits.")
        self._capture_optimizers(trainer)
        self._apply(pl_module, unfrozen=[])
        self._write_lrs(trainer)

    def _plan(self, trainer: Trainer) -> None:
        """Milestones in optimizer steps and each phase's ``(start, length)``."""
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()  # as estimated_stepping_batches does, which skips it when max_epochs=-1
        total = float(trainer.estimated_stepping_batches)
        total = math.inf if total < 0 else total  # -1: an iterable dataset without max_steps
        batches = trainer.num_training_batches
        self._per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else 0
        n = len(self._groups)
        if self.strategy in _UNFREEZING:
            every = self.unfreeze_at if self.unfreeze_at is not None else 1
            marks = every if isinstance(every, list) else [every] if self.strategy == "freeze_unfreeze" else \
                [every * (i + 1) for i in range(n - 1)]
        else:
            marks = []
        if marks and self.unit == "epoch" and not self._per_epoch:
            raise ValueError("FineTune: unit='epoch' needs a train dataloader with a length; use unit='step'.")
        steps = [m if self.unit == "step" else m * self._per_epoch for m in marks]
        if isinstance(self.unfreeze_at, int) and self.strategy == "gradual":
            steps = [s for s in steps if s < total]  # an int means "every k until the end"
        late = [m for m, s in zip(marks, steps, strict=False) if not s < total]
        if late:
            raise ValueError(f"FineTune: unfreeze_at={late} ({self.unit}s) is at or past the end of training "
                             f"({total} steps); lower it or train longer.")
        self._milestones = steps
        self._phases = phase_bounds(steps, total)
        if self.schedule is not None:
            if len(self.schedule) not in (1, len(self._phases)):
                raise ValueError(f"FineTune: {len(self.schedule)} PhaseSchedules for {len(self._phases)} phases; "
                                 f"give one for all phases or one per phase.")
            if not math.isfinite(total):
                raise ValueError("FineTune: schedule needs a finite training length; set max_epochs or max_steps.")
            for k, (start, length) in enumerate(self._phases):
                try:
                    self._spec(k).factor(0, length)
                except ValueError as err:
                    raise ValueError(f"FineTune: phase {k} ({length} steps from step {start}): {err}") from err

    def _capture_optimizers(self, trainer: Trainer) -> None:
        """The fresh optimizers' LRs, each param group's layer group, and the schedulers to steer."""
        discriminative = self.lr_range is not None or self.lr_mults is not None
        self._refs, self._owner, self._keeps_lr, self._scheds = [], [], [], []
        for opt in trainer.optimizers:
            sets = owners(opt.param_groups, self._groups)
            mixed = [(j, sorted(map(str, s))) for j, s in enumerate(sets) if len(s - {None}) > 1]
            if discriminative and mixed:
                raise ValueError(f"FineTune: discriminative LRs need one optimizer param group per layer group, but "
                                 f"param group {mixed[0][0]} mixes {mixed[0][1]}; build one group per layer group.")
            self._refs.append([float(g.get("initial_lr", g["lr"])) for g in opt.param_groups])
            self._owner.append([next(iter(s)) if len(s) == 1 else None for s in sets])
            self._keeps_lr.append([self.train_bn and any(id(p) in self._bn_params for p in g["params"])
                                   for g in opt.param_groups])
            scheds = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is opt]
            self._scheds.append(scheds[0] if scheds else None)
        freezable = any(o is not None and o not in self.trainable(0) for owned in self._owner for o in owned)
        self._controls_lr = self.schedule is not None or discriminative or (self.strategy != "no_freeze" and freezable)
        if not self._controls_lr:
            return
        scheds = [c.scheduler for c in trainer.lr_scheduler_configs]
        if self.schedule is not None and scheds:
            raise ValueError(f"FineTune: schedule= and the module's {type(scheds[0]).__name__} would both set the LR; "
                             f"drop lr_scheduler from the module or schedule from FineTune.")
        foreign = [type(s).__name__ for s in scheds if not isinstance(s, FactorScheduler)]
        if foreign:
            raise ValueError(f"FineTune: cannot keep per-group LRs under {foreign[0]}, which sets absolute LRs; use "
                             f"a lightkit.lr_schedulers class (e.g. OneCycle) or FineTune(schedule=[...]).")

    # -- applying a phase -----------------------------------------------------------------------
    def _spec(self, phase: int) -> PhaseSchedule:
        assert self.schedule is not None
        return self.schedule[phase] if len(self.schedule) > 1 else self.schedule[0]

    def _set_requires_grad(self) -> None:
        on = set(self.trainable())
        for name, params in self._groups:
            for _, p in params:
                keep = self._requires_grad[id(p)] and (name in on or (self.train_bn and id(p) in self._bn_params))
                if p.requires_grad != keep:
                    p.requires_grad_(keep)
                    p.grad = None

    def _apply(self, pl_module: LightningModule, unfrozen: list[str]) -> None:
        self._set_requires_grad()
        for name in unfrozen:
            for m in self._bn[name]:
                m.train(pl_module.training)
        self._bn_eval()

    def _bn_eval(self) -> None:
        """Frozen groups' BN layers to eval mode: Lightning calls ``model.train()`` each epoch."""
        if not self.train_bn:
            on = set(self.trainable())
            for name, mods in self._bn.items():
                if name not in on:
                    for m in mods:
                        m.eval()

    def base_lr(self, k: int, j: int) -> float:
        """Base LR of param group ``j`` of optimizer ``k`` in the current phase (see the class docstring)."""
        owner, ref = self._owner[k][j], self._refs[k][j]
        scale = self._spec(self.phase).lr_scale if self.schedule is not None else 1.0
        if owner is None:
            return ref * scale
        if owner not in self.trainable() and not self._keeps_lr[k][j]:
            return 0.0
        if self.lr_range is not None:
            lrs = geometric_lrs(self.lr_range[0], self.lr_range[1], len(self._groups))
            return lrs[self.group_names.index(owner)] * scale
        return ref * (self.lr_mults or {}).get(owner, 1.0) * scale

    def _write_lrs(self, trainer: Trainer) -> None:
        if not self._controls_lr:
            return
        step = trainer.global_step
        for k, opt in enumerate(trainer.optimizers):
            sched = self._scheds[k]
            if self.schedule is not None:
                start, length = self._phases[self.phase]
                s = self._spec(self.phase).factor(max(step - start, 0), length)
            else:
                s = sched.factor(sched.last_epoch) if sched is not None else 1.0
            for j, group in enumerate(opt.param_groups):
                base = self.base_lr(k, j)
                group["initial_lr"] = base
                if sched is not None:
                    sched.base_lrs[j] = base
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(base * s)
                else:
                    group["lr"] = base * s

    def _advance(self, trainer: Trainer, pl_module: LightningModule, position: int) -> None:
        """Enter every phase whose milestone (in steps) ``position`` has reached."""
        before = set(self.trainable())
        while self.phase < len(self._milestones) and position >= self._milestones[self.phase]:
            self.phase += 1
            self.phase_starts.append(trainer.global_step)
        unfrozen = [n for n in self.trainable() if n not in before]
        if unfrozen:
            self._apply(pl_module, unfrozen)
            rank_zero_info(f"FineTune: phase {self.phase} at step {trainer.global_step}: unfroze {unfrozen}; "
                           f"training {self.trainable()}.")
        self._write_lrs(trainer)

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.unit == "epoch":
            self._advance(trainer, pl_module, trainer.current_epoch * self._per_epoch)
        self._bn_eval()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Entering the next epoch's phase here (not only at its start) makes the checkpoint written at this
        # epoch's end, and a monitor logging before this callback at the next epoch start, see the new phase.
        if self.unit == "epoch":
            self._advance(trainer, pl_module, (trainer.current_epoch + 1) * self._per_epoch)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._bn_eval()
        self._advance(trainer, pl_module, trainer.global_step if self.unit == "step" else -1)
        logs = {"finetune/phase": float(self.phase)}
        for k, opt in enumerate(trainer.optimizers):
            for owner, group in zip(self._owner[k], opt.param_groups, strict=True):
                if owner is not None:
                    logs.setdefault(f"finetune/lr/{owner}", float(group["lr"]))
        pl_module.log_dict(logs, on_step=True, on_epoch=False, batch_size=1)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # global_step has moved on: set the next step's LRs now, whatever the callback order of monitors.
        self._advance(trainer, pl_module, trainer.global_step if self.unit == "step" else -1)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Before setup (a callback just loaded from a checkpoint) the group names are the loaded ones.
        names = self.group_names if self._groups else list(self._loaded_names or [])
        return {"phase": self.phase, "phase_starts": list(self.phase_starts), "group_names": names,
                "trainable": trainable_groups(self.strategy, names, self.phase) if names else []}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phase = int(state_dict["phase"])
        self.phase_starts = [int(s) for s in state_dict["phase_starts"]]
        self._loaded_names = list(state_dict["group_names"])
