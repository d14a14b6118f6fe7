"""Multi-task loss weighting and soft parameter sharing: pure torch, no Lightning.

Three ways to add up per-task losses ``L_k`` into one training loss:

- fixed weights: ``sum_k w_k L_k``;
- homoscedastic uncertainty (Kendall, Gal & Cipolla 2018, https://arxiv.org/abs/1705.07115): each task
  learns ``s_k = log sigma_k^2`` and contributes ``exp(-s_k) L_k + s_k / 2`` (classification, a
  softmax / sigmoid likelihood: ``1 / sigma^2 L + log sigma``) or ``exp(-s_k) L_k / 2 + s_k / 2``
  (regression, a Gaussian likelihood: ``1 / (2 sigma^2) L + log sigma``). Learning ``log sigma^2``
  rather than ``sigma`` keeps the division finite, as the paper recommends;
- dynamic weight averaging (DWA, Liu, Johns & Davison 2019, https://arxiv.org/abs/1803.10704):
  ``w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T)`` with ``r_k(t-1) = L_k(t-1) / L_k(t-2)``,
  the ratio of a task's average loss over the last two epochs; a task whose loss falls slowly gets
  more weight. ``w_k = 1`` for the first two epochs.

Soft parameter sharing (Duong et al. 2015, https://aclanthology.org/P15-2139; Ruder 2017,
https://arxiv.org/abs/1706.05098, section 3.2) gives every task its own encoder and adds
``lambda * sum_{i<j} ||theta_i - theta_j||^2`` over corresponding parameters to the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "dwa_weights",
    "fixed_weighted_loss",
    "soft_sharing_penalty",
    "uncertainty_weighted_loss",
    "uncertainty_weights",
]

KINDS = ("classification", "regression")
"""Likelihood families of :func:`uncertainty_weighted_loss`."""


def _check_kinds(kinds: Sequence[str], n: int) -> None:
    if len(kinds) != n:
        raise ValueError(f"uncertainty_weighted_loss: {len(kinds)} kinds for {n} losses; give one kind per task.")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"uncertainty_weighted_loss: kind {bad[0]!r} is not one of {list(KINDS)}.")


def fixed_weighted_loss(losses: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k L_k`` for a 1-D tensor of task losses and one weight per task.

    Raises:
        ValueError: ``losses`` and ``weights`` differ in shape.
    """
    if losses.shape != weights.shape:
        raise ValueError(f"fixed_weighted_loss: losses {tuple(losses.shape)} and weights {tuple(weights.shape)} "
                         f"differ in shape; give one weight per task.")
    return (weights.to(losses) * losses).sum()


def uncertainty_weights(log_vars: Tensor, kinds: Sequence[str]) -> Tensor:
    """The factor in front of each task loss: ``exp(-s)`` (classification) or ``exp(-s) / 2`` (regression).

    Args:
        log_vars: ``s_k = log sigma_k^2``, shape (K,).
        kinds: ``"classification"`` or ``"regression"`` per task.
    """
    _check_kinds(kinds, len(log_vars))
    half = torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds], dtype=log_vars.dtype,
                        device=log_vars.device)
    return half * torch.exp(-log_vars)


def uncertainty_weighted_loss(losses: Tensor, log_vars: Tensor, kinds: Sequence[str]) -> Tensor:
    """Kendall et al. (2018) eq. 7 / 10: ``sum_k c_k exp(-s_k) L_k + s_k / 2`` with ``s_k = log sigma_k^2``.

    ``c_k = 1`` for classification (``1 / sigma^2 L + log sigma``) and ``1 / 2`` for regression
    (``1 / (2 sigma^2) L + log sigma``); ``s_k / 2 = log sigma_k``.

    Args:
        losses: per-task losses, shape (K,).
        log_vars: learned ``log sigma_k^2``, shape (K,); zeros start every task at weight 1 (1/2 for
            regression).
        kinds: ``"classification"`` or ``"regression"`` per task.

    Raises:
        ValueError: shapes or kinds do not match the losses.
    """
    if losses.shape != log_vars.shape:
        raise ValueError(f"uncertainty_weighted_loss: losses {tuple(losses.shape)} and log_vars "
                         f"{tuple(log_vars.shape)} differ in shape; give one log-variance per task.")
    return (uncertainty_weights(log_vars, kinds) * losses + 0.5 * log_vars).sum()


def dwa_weights(history: Tensor, temperature: float = 2.0) -> Tensor:
    """DWA task weights for the coming epoch from the average task losses of the epochs so far.

    Args:
        history: (E, K) average loss of each of K tasks in each past epoch, oldest first; only the last
            two rows are used. With fewer than two epochs every weight is 1.
        temperature: ``T`` > 0; large values make the weights uniform (the paper uses 2).

    Returns:
        (K,) weights summing to K.

    Raises:
        ValueError: ``temperature <= 0`` or ``history`` not 2-D.
    """
    if not temperature > 0:
        raise ValueError(f"dwa_weights: temperature={temperature} must be > 0 (the paper uses 2).")
    if history.ndim != 2:
        raise ValueError(f"dwa_weights: history has shape {tuple(history.shape)}; give (epochs, tasks).")
    k = history.shape[1]
    if history.shape[0] < 2:
        return torch.ones(k, dtype=history.dtype, device=history.device)
    ratio = history[-1] / history[-2].clamp_min(torch.finfo(history.dtype).tiny)
    return k * torch.softmax(ratio / temperature, dim=0)


def soft_sharing_penalty(modules: Sequence[nn.Module]) -> Tensor:
    """``sum_{i<j} sum_p ||theta_i^p - theta_j^p||^2`` over the corresponding parameters of ``modules``.

    Zero when the modules hold identical parameters; grows quadratically as they drift apart. Only
    parameters (not buffers such as BatchNorm statistics) are compared.

    Args:
        modules: two or more modules of the same architecture (e.g. one encoder per task).

    Raises:
        ValueError: fewer than two modules, or modules whose parameter names / shapes differ.
    """
    if len(modules) < 2:
        raise ValueError(f"soft_sharing_penalty: got {len(modules)} module(s); soft sharing needs two or more.")
    named = [dict(m.named_parameters()) for m in modules]
    first = named[0]
    for i, other in enumerate(named[1:], start=1):
        if other.keys() != first.keys() or any(other[n].shape != p.shape for n, p in first.items()):
            raise ValueError(f"soft_sharing_penalty: module {i} has other parameters than module 0; "
                             f"give modules of one architecture.")
    terms = []
    for name in first:
        for i in range(len(named)):
            for j in range(i + 1, len(named)):
                terms.append((named[i][name] - named[j][name]).pow(2).sum())
    return torch.stack(terms).sum()
