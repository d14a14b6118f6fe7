"""Weight penalties added to the loss: the lecture's regulariser R(w).

L2 is best left to the optimizer (``weight_decay``, decoupled in AdamW, Loshchilov & Hutter 2019,
https://arxiv.org/abs/1711.05101); L1 has no optimizer switch, so it is added to the loss here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["l1_penalty"]


def l1_penalty(params: Iterable[Tensor]) -> Tensor:
    """Sum of absolute values of all entries, ``sum_i |w_i|`` (Tibshirani 1996, the lasso).

    Multiply by a coefficient and add to the loss: ``loss + l1 * l1_penalty(decay_params)``. Its
    gradient is ``sign(w)`` (0 at 0), which pushes weights to exactly zero, unlike L2. Apply it to the
    same parameters as weight decay, not to biases and norm layers.

    Args:
        params: tensors (usually ``nn.Parameter``); all must be on one device.

    Returns:
        A scalar tensor on the parameters' device and dtype, differentiable; ``tensor(0.)`` when
        ``params`` is empty.
    """
    norms = [torch.linalg.vector_norm(p, ord=1) for p in params]
    if not norms:
        return torch.zeros(())
    return torch.stack(norms).sum()
