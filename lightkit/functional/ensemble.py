"""Ensembles as pure torch functions: averaged softmax, its accuracy / NLL / ECE, members evaluated one at a time,
and the snapshot-ensemble LR schedule.

An ensemble's prediction is the mean of its members' class probabilities (not of their logits): what
snapshot ensembles (Huang et al. 2017, https://arxiv.org/abs/1704.00109), checkpoint ensembles and
deep ensembles (Lakshminarayanan et al. 2017, https://arxiv.org/abs/1612.01474) all average.

No Lightning import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightkit.functional.schedules import cosine

__all__ = [
    "average_probs",
    "calibration_error",
    "classification_metrics",
    "load_weights",
    "member_probs",
    "snapshot_boundaries",
    "snapshot_lr_factor",
]


def average_probs(probs: Sequence[Tensor]) -> Tensor:
    """Mean of the members' probabilities, ``(N, C)`` each: the ensemble's prediction.

    Args:
        probs: one ``(N, C)`` tensor of class probabilities per member (softmax outputs).

    Raises:
        ValueError: no members, or members of different shapes.
    """
    if len(probs) == 0:
        raise ValueError("average_probs: got no members; pass one (N, C) probability tensor per member.")
    shapes = {tuple(p.shape) for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"average_probs: members have different shapes {sorted(shapes)}; every member must "
                         f"predict the same (N, C) inputs and classes.")
    return torch.stack([p.float() for p in probs]).mean(dim=0)


def calibration_error(probs: Tensor, target: Tensor, bins: int = 15) -> float:
    """Expected calibration error: ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over equal-width confidence bins.

    (Guo et al. 2017, https://arxiv.org/abs/1706.04599; 15 bins as there.)

    Args:
        probs: ``(N, C)`` class probabilities.
        target: ``(N,)`` class indices.
        bins: number of equal-width bins of the top-class confidence in [0, 1].

    Raises:
        ValueError: ``bins`` < 1.
    """
    if bins < 1:
        raise ValueError(f"calibration_error: bins={bins} must be >= 1 (15 is the usual choice).")
    conf, pred = probs.float().max(dim=1)
    correct = (pred == target).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    ece = probs.new_zeros((), dtype=torch.float32)
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.float().mean() * (correct[mask].mean() - conf[mask].mean()).abs()
    return float(ece)


def classification_metrics(probs: Tensor, target: Tensor) -> dict[str, float]:
    """``acc``, ``nll`` (mean negative log-likelihood of the true class, nats) and ``ece`` of probabilities.

    Args:
        probs: ``(N, C)`` class probabilities (an ensemble's mean softmax or one member's).
        target: ``(N,)`` class indices.

    Raises:
        ValueError: shapes that do not match.
    """
    if probs.ndim != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"classification_metrics: probs {tuple(probs.shape)} and target {tuple(target.shape)} do "
                         f"not match; pass (N, C) probabilities and (N,) class indices.")
    probs = probs.float()
    true_p = probs.gather(1, target.long().view(-1, 1)).squeeze(1)
    return {
        "acc": float((probs.argmax(dim=1) == target).float().mean()),
        "nll": float(-true_p.clamp_min(torch.finfo(torch.float32).tiny).log().mean()),
        "ece": calibration_error(probs, target),
    }


def load_weights(member: str | Path | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """A member's ``state_dict``: from a mapping, or a file (a Lightning checkpoint or a lightkit snapshot).

    Files are read with ``torch.load(weights_only=False)`` on the CPU: load only files you trust.
    """
    if isinstance(member, Mapping):
        return member
    payload = torch.load(member, map_location="cpu", weights_only=False)
    return payload["state_dict"] if isinstance(payload, Mapping) and "state_dict" in payload else payload


@torch.no_grad()
def member_probs(
    model: nn.Module, members: Sequence[str | Path | Mapping[str, Tensor]], batches: Iterable[Any]
) -> Tensor:
    """Softmax of each member on the same inputs, with the memory of one model: ``(M, N, C)``.

    The model's own weights are kept on the CPU, each member's ``state_dict`` is loaded into the model
    in turn, the inputs are predicted in eval mode, and the model's weights and mode are restored.

    Args:
        model: a module whose ``state_dict`` keys match the members' (``model(x)`` returns logits).
        members: ``state_dict`` mappings or paths to checkpoint / snapshot files.
        batches: re-iterable inputs in a fixed order (a list, or a DataLoader without shuffling):
            tensors, or tuples / lists whose first element is the input.

    Raises:
        ValueError: no members.
    """
    if len(members) == 0:
        raise ValueError("member_probs: got no members; pass state_dicts or checkpoint paths.")
    device = next(model.parameters()).device
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    was_training = model.training
    out: list[Tensor] = []
    try:
        model.eval()
        for member in members:
            model.load_state_dict(load_weights(member))
            probs = []
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                probs.append(model(x.to(device)).float().softmax(dim=1))
            out.append(torch.cat(probs))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return torch.stack(out)


def snapshot_boundaries(total_steps: int, cycles: int) -> list[int]:
    """Steps at which the ``cycles`` equal cosine cycles of a snapshot ensemble end: ``floor(k T / M)``, k = 1..M.

    Args:
        total_steps: optimizer steps of the whole fit, ``T``.
        cycles: number of cycles ``M`` (= snapshots), 1 <= M <= T.

    Raises:
        ValueError: ``cycles`` < 1 or more cycles than steps.
    """
    if cycles < 1:
        raise ValueError(f"snapshot_boundaries: cycles={cycles} must be >= 1.")
    if total_steps < cycles:
        raise ValueError(f"snapshot_boundaries: total_steps={total_steps} < cycles={cycles}; every cycle needs at "
                         f"least one optimizer step: train longer or use fewer cycles.")
    return [k * total_steps // cycles for k in range(1, cycles + 1)]


def snapshot_lr_factor(step: int, total_steps: int, cycles: int, final_factor: float = 0.0) -> float:
    """LR factor of a snapshot ensemble at optimizer step ``step`` (0-based): a cosine per cycle, restarted.

    Huang et al. 2017 (https://arxiv.org/abs/1704.00109), eq. 2:
    ``a(t) = a0 / 2 * (cos(pi * mod(t, T/M) / (T/M)) + 1)``, here with integer cycle boundaries
    :func:`snapshot_boundaries` and an optional floor ``final_factor``. The factor multiplies each
    parameter group's own base LR. Within a cycle it is smallest at the cycle's last step, where the
    snapshot is taken; past ``total_steps`` it holds the last cycle's final value.

    Args:
        step: optimizer steps done before this one, >= 0.
        total_steps: optimizer steps of the whole fit.
        cycles: number of cycles.
        final_factor: factor a cycle anneals to, in [0, 1).

    Raises:
        ValueError: negative ``step`` or bad ``total_steps`` / ``cycles`` / ``final_factor``.
    """
    if step < 0:
        raise ValueError(f"snapshot_lr_factor: step={step} must be >= 0.")
    ends = snapshot_boundaries(total_steps, cycles)
    k = next((i for i, end in enumerate(ends) if step < end), cycles - 1)
    start = 0 if k == 0 else ends[k - 1]
    return cosine(step - start, total_steps=ends[k] - start, final_factor=final_factor)

