"""Encoder weights from a local file: packaged names, readable errors, a strict fit and stem adaptation.

A weights file that belongs to another architecture must not load "as far as the shapes allow": a
resnet18 file given to a resnet10t encoder shares many tensor shapes, and loading those while the
rest stays random trains a half-pretrained model without a word. lightkit requires every encoder
tensor to be matched (the classifier of the file is dropped; a stem with another number of input
channels is adapted the way timm adapts hub weights, :func:`timm.models.adapt_input_conv`), and
``strict=False`` lets an expert accept a partial load with a warning naming what stays random.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "PACKAGED_PREFIX",
    "PretrainedWeightsError",
    "WeightsReport",
    "fit_state_dict",
    "packaged_weights",
    "read_state_dict",
    "resolve_packaged",
    "select_by_channels",
]

PACKAGED_PREFIX = "lightkit:"
"""``pretrained: lightkit:<name>`` names a weights file shipped in ``lightkit/assets/<name>.safetensors``."""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights cannot be found, read, or do not fit the encoder."""


def packaged_weights() -> list[str]:
    """Names of the weights files that ship with lightkit (``lightkit:<name>``)."""
    folder = resources.files("lightkit") / "assets"
    return sorted(p.name.removesuffix(".safetensors") for p in folder.iterdir() if p.name.endswith(".safetensors"))


def select_by_channels(pretrained: object, in_chans: int) -> object:
    """The weights for ``in_chans`` input channels when ``pretrained`` maps channel counts to weights
    (``{1: lightkit:mnist5k_resnet10t_aug20, 3: lightkit:mnist5k_resnet10t}``); any other value as it is.

    An encoder pretrained on gray images transfers best to gray images after long training, and to colour
    ones after less (benchmarks/RESULTS.md, "Recipe tuning"): the mapping lets one config use both, chosen by
    the channels the data turned out to have.

    Raises:
        PretrainedWeightsError: a mapping with no entry for ``in_chans``, or with a key that is not 1-4.
    """
    if not isinstance(pretrained, dict):
        return pretrained
    try:
        choices = {int(k): v for k, v in pretrained.items()}
    except (TypeError, ValueError):
        choices = {}
    if not choices or any(k not in (1, 2, 3, 4) for k in choices):
        raise PretrainedWeightsError(
            f"pretrained={pretrained!r}: a mapping of weights by input channels needs keys 1-4 "
            f"(e.g. {{1: lightkit:mnist5k_resnet10t_aug20, 3: lightkit:mnist5k_resnet10t}})."
        )
    if in_chans not in choices:
        raise PretrainedWeightsError(
            f"pretrained={pretrained!r} names no weights for in_chans={in_chans}; add an entry "
            f"{in_chans}: <weights>, or set data channels to one of {sorted(choices)}."
        )
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(f"lightkit: {in_chans}-channel data: encoder weights {choices[in_chans]} (the entry for {in_chans} "
                   f"in pretrained={pretrained}).")
    return choices[in_chans]


def resolve_packaged(value: str) -> Path:
    """The file behind ``lightkit:<name>``, found from any working directory.

    Raises:
        PretrainedWeightsError: no packaged weights of that name.
    """
    name = value.removeprefix(PACKAGED_PREFIX)
    path = Path(str(resources.files("lightkit") / "assets" / f"{name}.safetensors"))
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained={value!r}: lightkit ships no weights named {name!r}; packaged: "
            f"{[PACKAGED_PREFIX + n for n in packaged_weights()]}."
        )
    return path


def read_state_dict(path: Path, shown: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` / lightkit ``.ckpt`` file.

    A Lightning checkpoint's ``state_dict`` is returned as is (``encoder.*`` keys are taken by
    :func:`fit_state_dict`).

    Raises:
        PretrainedWeightsError: an empty, truncated or foreign file, with its name and the fix.
    """
    shown = shown or str(path)
    if path.stat().st_size == 0:
        raise PretrainedWeightsError(f"pretrained={shown!r}: the file is empty (0 bytes); copy or export the "
                                     f"weights again.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:  # safetensors, pickle and zip errors have no common base class
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        kind = "safetensors" if path.suffix == ".safetensors" else "a torch checkpoint"
        raise PretrainedWeightsError(
            f"pretrained={shown!r}: cannot read it as {kind} ({type(err).__name__}: {reason}); the file is "
            f"corrupt, truncated or of another format: copy or export it again."
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"pretrained={shown!r}: expected a state dict of tensors, found "
                                     f"{type(obj).__name__}; save the encoder's state_dict().")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


@dataclass
class WeightsReport:
    """What :func:`fit_state_dict` loaded: counts, the adapted stem, what stays random."""

    matched: int
    total: int
    adapted: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def _keys(cfg_value: object) -> tuple[str, ...]:
    if not cfg_value:
        return ()
    return (cfg_value,) if isinstance(cfg_value, str) else tuple(cfg_value)


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, encoder: str,
                   strict: bool = True) -> WeightsReport:
    """Load ``state`` into the timm ``model`` (built with ``num_classes=0``) and report what happened.

    Keys of a lightkit checkpoint (``encoder.*``) are unwrapped; the file's classifier (timm's
    ``pretrained_cfg["classifier"]``) is dropped; the stem (``pretrained_cfg["first_conv"]``) is
    adapted with :func:`timm.models.adapt_input_conv` when its input channels differ from the model's.

    Args:
        model: the encoder to fill.
        state: tensors read from the file.
        source: the file as the user named it (for messages).
        encoder: the timm name (for messages).
        strict: refuse a file that leaves any encoder tensor unmatched or has tensors the encoder
            lacks; ``False`` loads the matching tensors and warns about the rest.

    Raises:
        PretrainedWeightsError: nothing matches, or (``strict``) not every tensor matches.
    """
    from timm.models import adapt_input_conv

    if any(k.startswith("encoder.") for k in state):
        state = OrderedDict((k[len("encoder."):], v) for k, v in state.items() if k.startswith("encoder."))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = _keys(cfg.get("classifier"))
    stems = {f"{k}.weight" for k in _keys(cfg.get("first_conv"))}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    loaded: dict[str, torch.Tensor] = {}
    report = WeightsReport(matched=0, total=len(own))
    for key, target in own.items():
        value = state.get(key)
        if value is not None and value.shape == target.shape:
            loaded[key] = value
        elif (value is not None and key in stems and value.ndim == 4 and target.ndim == 4
              and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            loaded[key] = adapt_input_conv(int(target.shape[1]), value, base_chans=int(value.shape[1]))
            report.adapted.append(f"{key} {int(value.shape[1])} -> {int(target.shape[1])} input channels")
        else:
            report.random.append(key)
            found = "missing" if value is None else f"{tuple(value.shape)} in the file"
            report.mismatches.append(f"{key}: {found}, {tuple(target.shape)} in the encoder")
    report.matched = len(loaded)
    report.unused = sorted(k for k in state if k not in own and not k.endswith("num_batches_tracked")
                           and not any(k == c or k.startswith(c + ".") for c in classifier))
    if not loaded:
        raise PretrainedWeightsError(
            f"pretrained={source!r}: no tensor in the file matches encoder {encoder!r} (file keys start "
            f"{sorted(state)[:3]}); give weights saved from a {encoder} encoder, or set encoder to the "
            f"file's architecture."
        )
    summary = (f"pretrained={source!r}: matched {report.matched} of {report.total} tensors of encoder "
               f"{encoder!r}, {len(report.unused)} file tensors have no place in it")
    first = "; ".join(report.mismatches[:3] or report.unused[:3])
    if report.random or report.unused:
        if strict:
            raise PretrainedWeightsError(
                f"{summary} (first: {first}): the file is of another architecture. Fix: use weights saved "
                f"from a {encoder} encoder or set encoder to the file's architecture; pretrained_strict: false "
                f"loads the {report.matched} matching tensors and leaves the rest random."
            )
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"lightkit: {summary}; pretrained_strict=false: {len(report.random)} encoder tensors stay "
                       f"randomly initialised (first: {report.random[:3]}).")
    model.load_state_dict(loaded, strict=False)
    return report
