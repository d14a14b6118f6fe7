"""Activation, gradient and loss-curve statistics as pure torch / Python functions (no Lightning).

These are the numbers of CS231n's "babysitting the learning process" (https://cs231n.github.io/neural-networks-3/):
activation distributions per layer (dead ReLU units, saturated tanh / sigmoid), gradient norms, the
update/weight ratio (healthy around 1e-3) and the shape of the loss curve.

Every tensor-valued function works on the tensors' device and never reads a value back to the host, so a
caller gathers all statistics of one logging step and moves them with a single :func:`to_host` call (one
device synchronisation instead of one per statistic).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ACTIVATION_STATS",
    "ActivationKind",
    "ActivationRecorder",
    "activation_kind",
    "activation_stats",
    "grad_norms",
    "histogram",
    "histogram_edges",
    "loss_noise",
    "not_decreasing",
    "overfitting",
    "select_modules",
    "select_params",
    "to_host",
    "update_ratios",
]

ActivationKind = Literal["relu", "tanh", "sigmoid", "other"]

ACTIVATION_STATS: tuple[str, ...] = ("mean", "std", "zero", "dead", "saturated")
"""Order of the entries returned by :func:`activation_stats`."""

# ReLU family: outputs exactly 0 on the negative side, so a unit can die.
_RELU_LIKE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
# Smooth or leaky activations: no exact zeros and no saturation worth reporting.
_OTHER_ACT: tuple[type[nn.Module], ...] = (
    nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Softplus,
)
_TANH_LIKE: tuple[type[nn.Module], ...] = (nn.Tanh, nn.Hardtanh)
_SIGMOID_LIKE: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid)


def activation_kind(module: nn.Module) -> ActivationKind | None:
    """Kind of an activation module, or None when ``module`` is not an activation.

    ``relu`` (ReLU, ReLU6: dead units possible), ``tanh`` (Tanh, Hardtanh) and ``sigmoid`` (Sigmoid,
    Hardsigmoid) saturate; ``other`` covers LeakyReLU, ELU, GELU, SiLU, Mish and the like.
    """
    if isinstance(module, _RELU_LIKE):
        return "relu"
    if isinstance(module, _TANH_LIKE):
        return "tanh"
    if isinstance(module, _SIGMOID_LIKE):
        return "sigmoid"
    if isinstance(module, _OTHER_ACT):
        return "other"
    return None


def _unit_dim(x: Tensor) -> int:
    # (N, C) and (N, C, H, W) keep units in dim 1; (N, T, C) token sequences (ViT, MLP-Mixer) in the last dim.
    if x.ndim == 3:
        return 2
    return 1 if x.ndim >= 2 else 0


def activation_stats(x: Tensor, kind: ActivationKind = "other", tol: float = 0.01) -> Tensor:
    """Mean, std, zero fraction, dead-unit fraction and saturated fraction of one activation tensor.

    - ``zero``: fraction of elements exactly 0 (sparsity of a ReLU output).
    - ``dead``: fraction of units (channels of (N, C, H, W), features of (N, C), the last dim of
      (N, T, C)) that are exactly 0 for every sample and position of the batch: a dead ReLU unit
      (CS231n), which gets no gradient either.
    - ``saturated``: for ``tanh``, fraction of elements with ``|a| > 1 - tol``; for ``sigmoid``, with
      ``a < tol`` or ``a > 1 - tol``: where the local gradient is nearly 0. NaN for other kinds.

    Args:
        x: the activation, any shape with the batch first; any floating dtype (computed in float32).
        kind: the activation's kind (see :func:`activation_kind`).
        tol: saturation margin, in output units (0.01: tanh beyond +-0.99, sigmoid below 0.01 or above 0.99).

    Returns:
        float32 tensor of shape (5,) on ``x``'s device, in the order of ``ACTIVATION_STATS``.

    Raises:
        ValueError: ``kind`` unknown or ``tol`` outside (0, 0.5).
    """
    if kind not in ("relu", "tanh", "sigmoid", "other"):
        raise ValueError(f"activation_stats: kind={kind!r} is not one of 'relu', 'tanh', 'sigmoid', 'other'.")
    if not 0.0 < tol < 0.5:
        raise ValueError(f"activation_stats: tol={tol} must be in (0, 0.5); 0.01 is the usual margin.")
    x = x.detach().float()
    if x.numel() == 0:
        return torch.full((5,), float("nan"), device=x.device)
    mean = x.mean()
    std = x.std(correction=0)
    nonzero = x != 0
    zero = 1.0 - nonzero.float().mean()
    if x.ndim == 0:
        dead = zero
    else:
        unit = _unit_dim(x)
        other = [d for d in range(x.ndim) if d != unit]
        alive = nonzero.any(dim=other[0], keepdim=True) if other else nonzero
        for d in other[1:]:
            alive = alive.any(dim=d, keepdim=True)
        dead = 1.0 - alive.float().mean()
    if kind == "tanh":
        saturated = (x.abs() > 1.0 - tol).float().mean()
    elif kind == "sigmoid":
        saturated = ((x < tol) | (x > 1.0 - tol)).float().mean()
    else:
        saturated = torch.full((), float("nan"), device=x.device)
    return torch.stack([mean, std, zero, dead, saturated])


def histogram(x: Tensor, bins: int = 64) -> Tensor:
    """Histogram of the finite values of ``x`` over their own range, without a host sync.

    ``torch.histc`` needs its range as Python numbers (a sync to find it); here the range stays a
    tensor, so histograms of many tensors can be stacked and read back at once.

    Args:
        x: any tensor; NaN and Inf entries are not counted.
        bins: number of equal-width bins, >= 1.

    Returns:
        float32 tensor of shape (bins + 2,) on ``x``'s device: the counts, then the range ``lo, hi``
        (0, 0 when no value is finite). Turn the range into edges with :func:`histogram_edges`.

    Raises:
        ValueError: ``bins`` < 1.
    """
    if bins < 1:
        raise ValueError(f"histogram: bins={bins} must be >= 1; 64 is a good default.")
    flat = x.detach().reshape(-1).float()
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.inf).amin() if flat.numel() else torch.zeros((), device=flat.device)
    hi = torch.where(finite, flat, -torch.inf).amax() if flat.numel() else torch.zeros((), device=flat.device)
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    hi = torch.where(torch.isfinite(hi), hi, 0.0)
    width = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
    pos = torch.nan_to_num((flat - lo) / width * bins, nan=0.0, posinf=bins - 1, neginf=0.0)
    index = pos.clamp(0, bins - 1).long()  # the maximum falls into the last bin, as in histc
    counts = torch.zeros(bins, device=flat.device).scatter_add_(0, index, finite.float())
    return torch.cat([counts, lo.reshape(1), hi.reshape(1)])


def histogram_edges(lo: float, hi: float, bins: int) -> list[float]:
    """The ``bins + 1`` bin edges of a :func:`histogram` with range ``lo, hi`` (a degenerate range gets width 1e-6)."""
    if hi <= lo:
        hi = lo + 1e-6
    step = (hi - lo) / bins
    return [lo + i * step for i in range(bins)] + [hi]


def grad_norms(params: Sequence[Tensor]) -> Tensor:
    """L2 norm of each parameter's gradient (0 for a parameter without one), float32 (len(params),).

    The global norm, as ``clip_grad_norm_`` computes it, is ``grad_norms(all_params).norm()``.
    """
    if not params:
        return torch.zeros(0)
    device = params[0].device
    return torch.stack([
        torch.linalg.vector_norm(p.grad.detach().float()).to(device) if p.grad is not None
        else torch.zeros((), device=device)
        for p in params
    ])


def update_ratios(before: Sequence[Tensor], after: Sequence[Tensor], eps: float = 1e-12) -> Tensor:
    """Update/weight ratio ``||w_after - w_before|| / ||w_before||`` per parameter (CS231n: healthy near 1e-3).

    ``w_after - w_before`` is the step the optimizer actually took (``lr * update`` for SGD, including
    momentum, Adam's scaling and weight decay), so this works for any optimizer.

    Args:
        before: copies of the parameters taken before ``optimizer.step()``.
        after: the same parameters after it.
        eps: added to the weight norm so an all-zero weight gives a large finite ratio rather than Inf.

    Returns:
        float32 tensor (len(before),).

    Raises:
        ValueError: the two sequences differ in length or a pair in shape.
    """
    if len(before) != len(after):
        raise ValueError(f"update_ratios: {len(before)} tensors before and {len(after)} after; "
                         "pass the same parameters.")
    if not before:
        return torch.zeros(0)
    out = []
    for b, a in zip(before, after, strict=True):
        if b.shape != a.shape:
            raise ValueError(f"update_ratios: shapes {tuple(b.shape)} and {tuple(a.shape)} differ; "
                             "pass the same parameters.")
        b, a = b.detach().float(), a.detach().float()
        out.append(torch.linalg.vector_norm(a - b) / (torch.linalg.vector_norm(b) + eps))
    return torch.stack(out)


def to_host(tensors: Sequence[Tensor]) -> list[list[float]]:
    """Move many tensors to Python lists with one device synchronisation.

    Each tensor is flattened and cast to float32, all are concatenated on the first one's device,
    read with one ``.tolist()`` and split again.
    """
    if not tensors:
        return []
    device = tensors[0].device
    flat = [t.detach().reshape(-1).float().to(device) for t in tensors]
    values = torch.cat(flat).tolist()
    out, start = [], 0
    for t in flat:
        out.append(values[start:start + t.numel()])
        start += t.numel()
    return out


# -- choosing what to watch ----------------------------------------------------------------------
def _compile(pattern: str, owner: str, arg: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{owner}: {arg}={pattern!r} is not a valid regular expression ({err}); "
                         "fix the pattern.") from None


def select_modules(model: nn.Module, layers: str = "activations") -> list[tuple[str, nn.Module, ActivationKind]]:
    """Modules whose outputs to record: ``"activations"`` (every activation module) or a regex on module names.

    A regex is matched with ``re.search`` against names from ``model.named_modules()``; matched
    activation modules keep their kind, other modules are ``other``.

    Raises:
        ValueError: ``layers`` is not a valid regex.
    """
    if layers == "activations":
        found = [(name, m, activation_kind(m)) for name, m in model.named_modules()]
        return [(name, m, kind) for name, m, kind in found if kind is not None]
    pattern = _compile(layers, "select_modules", "layers")
    return [(name, m, activation_kind(m) or "other")
            for name, m in model.named_modules() if name and pattern.search(name)]


def select_params(model: nn.Module, params: str = "weights") -> list[tuple[str, nn.Parameter]]:
    """Parameters to watch: ``"weights"`` (ndim >= 2: conv / linear kernels), ``"all"``, or a regex on names.

    Frozen parameters are included, so a layer unfrozen later (``requires_grad`` flipped during
    fine-tuning) is watched from then on; while frozen its gradient norm and update are 0.

    Raises:
        ValueError: ``params`` is not a valid regex.
    """
    named = list(model.named_parameters())
    if params == "weights":
        return [(n, p) for n, p in named if p.ndim >= 2]
    if params == "all":
        return named
    pattern = _compile(params, "select_params", "params")
    return [(n, p) for n, p in named if pattern.search(n)]


class ActivationRecorder:
    """Forward hooks that compute :func:`activation_stats` (and optionally a :func:`histogram`) per module.

    Attach before a forward pass and remove after it: statistics are computed inside the hook, on the
    device, so later in-place operations (``ReLU(inplace=True)``, residual ``+=``) cannot alter them,
    and nothing is read back until :meth:`collect`. A module called several times in one forward (a
    shared ``self.relu``) is recorded once per call, as ``name``, ``name:1``, ``name:2``...

    Args:
        modules: ``(name, module, kind)`` triples, e.g. from :func:`select_modules`.
        bins: histogram bins per module; 0 records no histogram.
        tol: saturation margin passed to :func:`activation_stats`.
    """

    def __init__(self, modules: Sequence[tuple[str, nn.Module, ActivationKind]], bins: int = 0,
                 tol: float = 0.01) -> None:
        if bins < 0:
            raise ValueError(f"ActivationRecorder: bins={bins} must be >= 0 (0: no histograms).")
        self.modules = list(modules)
        self.bins = bins
        self.tol = tol
        self.handles: list[RemovableHandle] = []
        self.stats: dict[str, Tensor] = {}
        self.hists: dict[str, Tensor] = {}
        self.kinds: dict[str, ActivationKind] = {}

    @property
    def attached(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self.handles)

    def attach(self) -> None:
        """Register one forward hook per module (idempotent) and clear the previous results."""
        self.stats, self.hists, self.kinds = {}, {}, {}
        if self.handles:
            return
        for name, module, kind in self.modules:
            self.handles.append(module.register_forward_hook(self._hook(name, kind)))

    def remove(self) -> None:
        """Remove every hook this recorder registered; the recorded tensors stay until the next attach."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, name: str, kind: ActivationKind) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(out, Tensor) or not out.is_floating_point():
                return
            key, i = name, 1
            while key in self.stats:
                key, i = f"{name}:{i}", i + 1
            with torch.no_grad():
                self.stats[key] = activation_stats(out, kind, self.tol)
                self.kinds[key] = kind
                if self.bins:
                    self.hists[key] = histogram(out, self.bins)
        return hook


# -- loss-curve decisions (plain Python over host values) -----------------------------------------
def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def loss_noise(losses: Sequence[float]) -> float:
    """Coefficient of variation of a loss window around its linear trend: ``std(residual) / |mean|``.

    The trend is removed first, so a steadily falling loss is not mistaken for noise. NaN for fewer
    than 3 values or a zero mean.
    """
    n = len(losses)
    if n < 3:
        return float("nan")
    xs = range(n)
    mx, my = (n - 1) / 2, _mean(losses)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, losses, strict=True)) / sxx
    residual = [y - (my + slope * (x - mx)) for x, y in zip(xs, losses, strict=True)]
    std = math.sqrt(sum(r * r for r in residual) / n)
    return std / abs(my) if my else float("nan")


def not_decreasing(initial: Sequence[float], recent: Sequence[float], min_decrease: float = 0.01) -> bool:
    """Whether the smoothed recent loss has not fallen at least ``min_decrease`` (a fraction) below the initial loss.

    Both are means of their windows; empty windows or non-finite means give False.
    """
    start, now = _mean(initial), _mean(recent)
    if not (math.isfinite(start) and math.isfinite(now)):
        return False
    return now >= start * (1.0 - min_decrease) if start > 0 else now >= start


def overfitting(
    train_losses: Sequence[float], val_losses: Sequence[float], patience: int = 3, lrs: Sequence[float] | None = None
) -> bool:
    """Whether validation loss has stayed above its best for ``patience`` evaluations while training loss kept falling.

    ``train_losses[i]`` and ``val_losses[i]`` belong to evaluation ``i`` (the training loss averaged over
    the steps before it). Overfitting: the best validation loss is at least ``patience`` evaluations old,
    the latest validation loss is above it, and the latest training loss is below the training loss at
    that best evaluation (the gap widens: regularise, or stop early at the best checkpoint).

    ``lrs[i]``, when given, is the learning rate at evaluation ``i``. A latest LR above the LR at the best
    evaluation is not overfitting: a schedule that raises the LR (a warmup, the first part of a one-cycle, a
    cyclical LR's upswing) lifts the validation loss by itself, and it falls again as the LR comes down.

    Raises:
        ValueError: ``patience`` < 1 or the sequences differ in length.
    """
    if patience < 1:
        raise ValueError(f"overfitting: patience={patience} must be >= 1 evaluation.")
    if len(train_losses) != len(val_losses) or (lrs is not None and len(lrs) != len(val_losses)):
        lr_part = f" and {len(lrs)} LRs" if lrs is not None else ""
        raise ValueError(
            f"overfitting: {len(train_losses)} train and {len(val_losses)} val losses{lr_part}; give one of each "
            "per evaluation."
        )
    rates = list(lrs) if lrs is not None else [0.0] * len(val_losses)
    pairs = [(t, v, r) for t, v, r in zip(train_losses, val_losses, rates, strict=True)
             if math.isfinite(t) and math.isfinite(v)]
    if len(pairs) <= patience:
        return False
    best = min(range(len(pairs)), key=lambda i: pairs[i][1])
    last_train, last_val, last_lr = pairs[-1]
    if last_lr > pairs[best][2]:
        return False
    return len(pairs) - 1 - best >= patience and last_val > pairs[best][1] and last_train < pairs[best][0]
