"""Layer groups and phases for fine-tuning: grouping, discriminative LR spreads, per-phase schedules.

Pure torch; no Lightning import. :class:`lightkit.callbacks.finetune.FineTune` maps the trainer's state
onto these. A *layer group* is ``(name, [(param_name, param), ...])``, ordered from the stem (input
side) to the head, the shape ``ImageClassifier.layer_groups()`` returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightkit.functional import schedules as S

__all__ = [
    "FREEZE_STRATEGIES",
    "LayerGroups",
    "PhaseSchedule",
    "batchnorm_modules",
    "compile_patterns",
    "geometric_lrs",
    "group_by_modules",
    "owners",
    "phase_bounds",
    "trainable_groups",
]

FREEZE_STRATEGIES = ("no_freeze", "freeze", "freeze_unfreeze", "gradual")

LayerGroups = list[tuple[str, list[tuple[str, nn.Parameter]]]]
"""Named parameter groups from the stem to the head."""


def geometric_lrs(lo: float, hi: float, n: int) -> list[float]:
    """Discriminative LRs spaced geometrically from the stem to the head (fastai ``slice(lo, hi)``).

    Group ``i`` of ``n`` gets ``lo * (hi / lo) ** (i / (n - 1))``: the stem ``lo``, the head ``hi``, a
    constant ratio between neighbours (Howard & Ruder 2018, ULMFiT, https://arxiv.org/abs/1801.06146,
    use a factor 2.6 per layer). A single group gets ``hi``.

    Args:
        lo: LR of the first (stem) group, > 0.
        hi: LR of the last (head) group, >= lo.
        n: number of groups, >= 1.

    Raises:
        ValueError: ``lo <= 0``, ``hi < lo`` or ``n < 1``.
    """
    if not 0.0 < lo <= hi:
        raise ValueError(f"geometric_lrs: need 0 < lo <= hi, got lo={lo}, hi={hi}; give [stem_lr, head_lr].")
    if n < 1:
        raise ValueError(f"geometric_lrs: n={n} groups; need at least 1.")
    if n == 1:
        return [float(hi)]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def compile_patterns(groups: Mapping[str, Sequence[str]]) -> dict[str, list[re.Pattern[str]]]:
    """Compile ``{group: [module name or regex, ...]}``; each pattern must match a whole module name.

    Raises:
        ValueError: no groups, a group with no patterns, or a pattern that is not a valid regex.
    """
    if not groups:
        raise ValueError("groups={} names no group; give e.g. {'features': ['features'], 'classifier': "
                         "['classifier']}.")
    out: dict[str, list[re.Pattern[str]]] = {}
    for name, patterns in groups.items():
        if isinstance(patterns, str) or not patterns:
            raise ValueError(f"groups[{name!r}]={patterns!r} must be a non-empty list of module names or regexes.")
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as err:
                raise ValueError(f"groups[{name!r}]: {pattern!r} is not a valid regex ({err}); "
                                 "escape dots as '\\.'.") from err
        out[name] = compiled
    return out


def group_by_modules(module: nn.Module, groups: Mapping[str, Sequence[str]]) -> LayerGroups:
    """Layer groups of any ``nn.Module`` from module names or regexes, in the order of ``groups``.

    A pattern selects every submodule whose dotted name it matches whole (``re.fullmatch``; a plain
    name such as ``"features"`` matches itself), and with it all parameters below that submodule.
    Parameters no pattern selects belong to no group (the caller decides what that means).

    Args:
        module: the model, e.g. a torchvision model with ``features`` / ``classifier``.
        groups: group name -> module names or regexes, from the stem to the head.

    Raises:
        ValueError: a bad pattern, a group that selects no parameter, or a parameter selected by two groups.
    """
    compiled = compile_patterns(groups)
    owner: dict[int, str] = {}
    out: LayerGroups = []
    for name, patterns in compiled.items():
        chosen: dict[int, tuple[str, nn.Parameter]] = {}
        for mod_name, mod in module.named_modules():
            if mod_name and any(p.fullmatch(mod_name) for p in patterns):
                for p_name, param in mod.named_parameters(prefix=mod_name):
                    chosen.setdefault(id(param), (p_name, param))
        if not chosen:
            raise ValueError(
                f"groups[{name!r}]={list(groups[name])} selects no parameter of {type(module).__name__}; "
                f"use names from model.named_modules(), e.g. {_top_names(module)}."
            )
        for key, (p_name, _) in chosen.items():
            if key in owner:
                raise ValueError(
                    f"groups: parameter {p_name!r} is selected by both {owner[key]!r} and {name!r}; "
                    f"make the patterns disjoint."
                )
            owner[key] = name
        out.append((name, list(chosen.values())))
    return out


def _top_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_children()][:6]


def owners(param_groups: Iterable[Mapping[str, Any]], layer_groups: LayerGroups) -> list[set[str | None]]:
    """For each optimizer parameter group, the set of layer groups its parameters belong to.

    ``None`` in a set stands for parameters of no layer group. A set ``{name}`` means the optimizer
    group lies wholly inside one layer group, so its LR can be set per layer group.
    """
    where = {id(p): name for name, params in layer_groups for _, p in params}
    return [{where.get(id(p)) for p in group["params"]} for group in param_groups]


def batchnorm_modules(module: nn.Module, layer_groups: LayerGroups) -> dict[str, list[_BatchNorm]]:
    """BatchNorm layers (incl. timm's ``BatchNormAct2d`` and ``SyncBatchNorm``) of each layer group.

    A BN layer belongs to the group holding its ``weight`` (or ``bias``); BN layers without affine
    parameters cannot be placed and are left out.
    """
    where = {id(p): name for name, params in layer_groups for _, p in params}
    out: dict[str, list[_BatchNorm]] = {name: [] for name, _ in layer_groups}
    for mod in module.modules():
        if isinstance(mod, _BatchNorm):
            param = mod.weight if mod.weight is not None else mod.bias
            if param is not None and id(param) in where:
                out[where[id(param)]].append(mod)
    return out


# -- phases ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseSchedule:
    """LR schedule of one fine-tuning phase, restarted at each unfreeze (fastai ``fine_tune``).

    A phase runs from one unfreeze to the next (or to the end of training); its position and length
    are counted in optimizer steps.

    Attributes:
        shape: ``one_cycle`` (Smith & Topin 2017, https://arxiv.org/abs/1708.07120), ``cosine`` (to 0)
            or ``constant``.
        lr_scale: multiplier of every group's base LR in this phase (fastai halves it after unfreezing: 0.5).
        pct_start: ``one_cycle``: fraction of the phase spent rising, in (0, 1) (fastai: 0.99 while frozen, 0.3 after).
        div_factor: ``one_cycle``: peak / initial LR, >= 1 (fastai: 25 while frozen, 5 after).
        final_div_factor: ``one_cycle``: initial / final LR, >= 1.
    """

    shape: Literal["one_cycle", "cosine", "constant"] = "one_cycle"
    lr_scale: float = 1.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        if self.shape not in ("one_cycle", "cosine", "constant"):
            raise ValueError(f"PhaseSchedule: shape={self.shape!r} is not one of 'one_cycle', 'cosine', 'constant'.")
        if not self.lr_scale > 0:
            raise ValueError(f"PhaseSchedule: lr_scale={self.lr_scale} must be > 0; "
                             "freeze groups with the strategy instead.")
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"PhaseSchedule: pct_start={self.pct_start} must be in (0, 1) (fraction of the phase).")
        if not (self.div_factor >= 1.0 and self.final_div_factor >= 1.0):
            raise ValueError(
                f"PhaseSchedule: div_factor={self.div_factor} and final_div_factor={self.final_div_factor} "
                "must be >= 1."
            )

    def factor(self, step: float, total_steps: float) -> float:
        """LR multiplier ``step`` optimizer steps into a phase of ``total_steps`` steps."""
        if self.shape == "one_cycle":
            return S.one_cycle(step, total_steps, self.pct_start, self.div_factor, self.final_div_factor)
        if self.shape == "cosine":
            return S.cosine(step, total_steps)
        return S.constant(step)


def trainable_groups(strategy: str, names: Sequence[str], phase: int) -> list[str]:
    """Layer groups that train in ``phase`` (0 before the first unfreeze), ``names`` stem to head.

    ``no_freeze``: all; ``freeze``: the last (the head); ``freeze_unfreeze``: the head, then all from
    phase 1; ``gradual``: the last ``phase + 1`` groups (ULMFiT, https://arxiv.org/abs/1801.06146).

    Raises:
        ValueError: an unknown ``strategy`` or a negative ``phase``.
    """
    if strategy not in FREEZE_STRATEGIES or phase < 0:
        raise ValueError(f"trainable_groups: strategy={strategy!r}, phase={phase}; "
                         f"need one of {FREEZE_STRATEGIES} and phase >= 0.")
    n = len(names)
    k = {"no_freeze": n, "freeze": 1, "freeze_unfreeze": 1 if phase == 0 else n}.get(strategy, min(1 + phase, n))
    return list(names[n - k:])


def phase_bounds(milestones: Sequence[int], total_steps: float) -> list[tuple[int, float]]:
    """``(start, length)`` in optimizer steps of each phase: phase 0 starts at 0, phase k at ``milestones[k-1]``.

    Raises:
        ValueError: milestones not strictly increasing in ``(0, total_steps)``.
    """
    marks = [0, *milestones]
    if any(b <= a for a, b in zip(marks, marks[1:], strict=False)) or (milestones and not milestones[-1] < total_steps):
        raise ValueError(f"phase_bounds: milestones={list(milestones)} must increase strictly within (0, "
                         f"{total_steps}) steps.")
    ends = [*milestones, total_steps]
    return [(start, end - start if math.isfinite(end) else end) for start, end in zip(marks, ends, strict=True)]
