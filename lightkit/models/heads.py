"""Plain ``nn.Module`` classification heads (no Lightning)."""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["ACTIVATIONS", "ClassifierHead", "init_head_"]

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh"]
HeadInit = Literal["auto", "kaiming", "xavier"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}
# torch.nn.init gain names; ELU and GELU have no entry of their own and use the ReLU gain, the usual choice.
_GAIN_NAME = {"relu": "relu", "leaky_relu": "leaky_relu", "elu": "relu", "gelu": "relu", "tanh": "tanh"}


def init_head_(head: nn.Module, activation: Activation = "relu", scheme: HeadInit = "auto") -> None:
    """Initialise every ``nn.Linear`` in ``head`` in place.

    ``auto`` picks Kaiming (He et al. 2015, https://arxiv.org/abs/1502.01852) for the ReLU family and
    Xavier (Glorot & Bengio 2010) for tanh, the pairing each was derived for. The last layer feeds a
    softmax, not the activation, so it gets the linear gain. Biases start at zero.
    """
    if scheme not in ("auto", "kaiming", "xavier"):
        raise ValueError(f"ClassifierHead: head_init={scheme!r} is not one of 'auto', 'kaiming', 'xavier'.")
    if scheme == "auto":
        scheme = "xavier" if activation == "tanh" else "kaiming"
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        last = i == len(linears) - 1
        nonlinearity = "linear" if last else _GAIN_NAME[activation]
        if scheme == "kaiming":
            a = 0.01 if nonlinearity == "leaky_relu" else 0.0
            nn.init.kaiming_normal_(layer.weight, a=a, nonlinearity=nonlinearity)
        else:
            param = 0.01 if nonlinearity == "leaky_relu" else None
            nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain(nonlinearity, param))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class ClassifierHead(nn.Sequential):
    """MLP head on pooled encoder features: ``[Dropout, Linear, act] * len(hidden)`` then ``Dropout, Linear``.

    Args:
        in_features: width of the pooled encoder features.
        num_classes: number of outputs (logits).
        hidden: widths of the hidden layers; empty gives a linear head.
        dropout: dropout probability before every linear layer (0 disables it).
        activation: non-linearity between hidden layers.
        init: weight init; ``auto`` matches it to the activation.

    Raises:
        ValueError: non-positive sizes, dropout outside [0, 1), unknown activation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: list[int] | None = None,
        dropout: float = 0.0,
        activation: Activation = "relu",
        init: HeadInit = "auto",
    ) -> None:
        hidden = list(hidden or [])
        if num_classes < 1:
            raise ValueError(f"ClassifierHead: num_classes={num_classes} must be >= 1.")
        if any(h < 1 for h in hidden):
            raise ValueError(f"ClassifierHead: hidden={hidden} must contain positive widths.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ClassifierHead: dropout={dropout} must be in [0, 1).")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"ClassifierHead: activation={activation!r} is not one of {sorted(ACTIVATIONS)}."
            )
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        init_head_(self, activation, init)
