"""timm encoders with pretrained weights that never wait on a missing network.

``timm.create_model(name, pretrained=True)`` with no network either fails after ~47 s or hangs
for minutes, depending on how the network drops packets. lightkit resolves weights locally first
(a file, a timm ``local-dir:`` folder, the Hugging Face cache) and only goes to the hub after a
bounded reachability probe, so the worst case is a clear error in a few seconds.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

import timm
from torch import nn

from lightkit.models.weights import (
    PACKAGED_PREFIX,
    PretrainedWeightsError,
    fit_state_dict,
    read_state_dict,
    resolve_packaged,
    select_by_channels,
)

__all__ = [
    "PretrainedWeightsError",
    "create_encoder",
    "encoder_data_config",
    "encoder_layer_groups",
    "hub_reachable",
]

HUB_HOST = "huggingface.co"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` accepts a TCP connection within ``timeout`` seconds.

    DNS resolution has no timeout of its own, so the probe runs in a daemon thread and is
    abandoned after ``timeout``: the call returns in at most ``timeout`` seconds whatever the
    network does. ``HF_HUB_OFFLINE=1`` short-cuts to ``False``.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


_LOOKALIKE = str.maketrans({"o": "0", "l": "1", "i": "1"})


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def close_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The ``n`` names nearest to ``name`` by edit distance, after folding case and look-alike
    characters (O/0, l/I/1), so the typo ``resnet1O`` finds ``resnet10t``."""
    key = name.lower().translate(_LOOKALIKE)
    return sorted(names, key=lambda other: (_edit_distance(key, other.lower().translate(_LOOKALIKE)), other))[:n]


def _hub_id(model_name: str, pretrained: bool | str) -> str | None:
    """The Hugging Face repo id timm would download for this request, if any."""
    if isinstance(pretrained, str):
        return pretrained.removeprefix("hf-hub:")
    if model_name.startswith("hf-hub:"):
        return model_name.removeprefix("hf-hub:").split("@")[0]
    cfg = timm.models.get_pretrained_cfg(model_name)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _offline_message(model_name: str, pretrained: bool | str, repo_id: str | None) -> str:
    where = f"Hugging Face repo {repo_id!r}" if repo_id else "the hub"
    return (
        f"pretrained={pretrained!r} for encoder {model_name!r}: weights are not in the local Hugging Face "
        f"cache and {where} is unreachable. Fix: pass a local file (pretrained: path/to/weights.safetensors "
        f"| .pth | .bin | a lightkit .ckpt), a timm folder (pretrained: local-dir:/path), copy the repo into "
        f"the HF cache ($HF_HOME/hub), or use pretrained: false to train from scratch."
    )


def create_encoder(
    name: str,
    pretrained: bool | str | dict[int, bool | str] = False,
    in_chans: int = 3,
    drop_path_rate: float | None = None,
    probe_timeout: float = 3.0,
    pretrained_strict: bool = True,
) -> nn.Module:
    """Create a timm model with its classifier removed (``num_classes=0``: pooled features out).

    Args:
        name: timm model name, optionally with a tag (``resnet18.a1_in1k``) or ``hf-hub:org/repo``.
        pretrained: ``False`` (random init); ``True`` (timm's default weights for ``name``);
            a path to ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` weights or a lightkit Lightning
            checkpoint (``.ckpt``, whose ``encoder.*`` weights are taken); ``lightkit:<name>`` for
            weights shipped with lightkit (``lightkit:mnist5k_resnet10t``, found from any folder);
            ``local-dir:/folder`` written by ``timm.models.save_for_hf``; or a Hugging Face repo id
            (``timm/resnet18.a1_in1k``). A relative path is taken from the working directory. A mapping
            from input channels to any of these (``{1: lightkit:mnist5k_resnet10t_aug20, 3: ...}``)
            takes the entry for ``in_chans`` (:func:`lightkit.models.weights.select_by_channels`).
        in_chans: input channels; a pretrained stem with another channel count is adapted
            (:func:`timm.models.adapt_input_conv`: summed to 1 channel, repeated and scaled to 3).
        drop_path_rate: stochastic depth rate, where the architecture supports it.
        probe_timeout: seconds the hub reachability probe may take before giving up.
        pretrained_strict: a weights file must fill every encoder tensor (see
            :func:`lightkit.models.weights.fit_state_dict`); ``False`` accepts a partial load with a warning.

    Raises:
        PretrainedWeightsError: weights file missing, unreadable or of another architecture, a mapping
            with no entry for ``in_chans``, or hub weights neither cached nor reachable. Raised within
            ``probe_timeout`` seconds, never after a long network hang.
    """
    pretrained = select_by_channels(pretrained, in_chans)  # a mapping by channels: its entry, said in one line
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if name not in timm.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
        base = name.split(".")[0]
        if base not in timm.list_models():
            close = close_names(base, timm.list_models())
            raise ValueError(f"encoder={name!r} is not a timm model name. Close matches: {close}. "
                             f"See timm.list_models() for all names.")

    if pretrained is False or pretrained is None:
        return timm.create_model(name, pretrained=False, **kwargs)

    if isinstance(pretrained, str) and pretrained.startswith("local-dir:"):
        folder = Path(pretrained.removeprefix("local-dir:")).expanduser()
        if not (folder / "config.json").is_file():
            raise PretrainedWeightsError(
                f"pretrained={pretrained!r}: {folder} has no config.json; write it with "
                f"timm.models.save_for_hf(model, folder, safe_serialization=True)."
            )
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)

    if isinstance(pretrained, str) and (pretrained.startswith(PACKAGED_PREFIX) or (
        pretrained.endswith(_WEIGHT_SUFFIXES) or os.sep in pretrained or pretrained.startswith((".", "~"))
    ) and not re.fullmatch(r"(hf-hub:)?[\w.-]+/[\w.-]+", pretrained)):
        if pretrained.startswith(PACKAGED_PREFIX):
            path = resolve_packaged(pretrained)
        else:
            path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"pretrained={pretrained!r}: no such file (looked in {Path.cwd()}). Give an existing "
                f".safetensors/.pth/.bin/.ckpt path, lightkit:<name> for packaged weights, a Hugging Face "
                f"repo id, true (timm default) or false."
            )
        model = timm.create_model(name, pretrained=False, **kwargs)
        report = fit_state_dict(model, read_state_dict(path, pretrained), pretrained, name, strict=pretrained_strict)
        if report.adapted:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(f"lightkit: adapted the stem of {path.name} to the data ({', '.join(report.adapted)}; "
                           f"timm adapt_input_conv: summed for 1 channel, repeated and scaled for more).")
        model.lightkit_pretrained_source = str(path)
        return model

    repo_id = _hub_id(name, pretrained)
    if repo_id is None:
        raise PretrainedWeightsError(
            f"pretrained={pretrained!r}: timm has no pretrained weights registered for {name!r}; "
            f"pass a local weights file or pretrained: false."
        )
    overlay = {"hf_hub_id": repo_id} if isinstance(pretrained, str) else None
    if repo_id and _in_hf_cache(repo_id):
        # Resolve from the cache with no network call (and no slow 'is there a newer revision' check).
        previous = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import huggingface_hub.constants as hf_constants

            saved = hf_constants.HF_HUB_OFFLINE
            hf_constants.HF_HUB_OFFLINE = True
            try:
                return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            finally:
                hf_constants.HF_HUB_OFFLINE = saved
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
    if not hub_reachable(timeout=probe_timeout):
        raise PretrainedWeightsError(_offline_message(name, pretrained, repo_id))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def encoder_data_config(encoder: nn.Module) -> dict[str, Any]:
    """The preprocessing the encoder's weights were trained with: input size, mean, std, interpolation.

    Mean and std are reduced to the encoder's input-channel count (a grayscale model built from an
    RGB-pretrained config gets the channel mean), so they can be applied as they are.
    """
    cfg = timm.data.resolve_model_data_config(encoder)
    in_chans = int(getattr(encoder, "in_chans", None) or cfg["input_size"][0])
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if len(mean) != in_chans:
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    return {
        "input_size": (in_chans, *cfg["input_size"][1:]),
        "mean": mean,
        "std": std,
        "interpolation": cfg.get("interpolation", "bilinear"),
        "crop_pct": cfg.get("crop_pct", 1.0),
    }


def encoder_layer_groups(encoder: nn.Module) -> list[tuple[str, list[str]]]:
    """Parameter names of a timm encoder grouped from the stem to the last block.

    Uses the model's own ``group_matcher(coarse=True)`` (the same grouping timm uses for layer-wise
    LR decay), so no attribute names are assumed. Returns ``[("stem", [...]), ("block1", [...]), ...]``;
    a model without a group matcher comes back as a single group ``"encoder"``.
    """
    from timm.models import group_parameters

    names = [n for n, _ in encoder.named_parameters()]
    if not hasattr(encoder, "group_matcher"):
        return [("encoder", names)]
    try:
        grouped = group_parameters(encoder, encoder.group_matcher(coarse=True))
    except (NotImplementedError, AttributeError, TypeError):
        return [("encoder", names)]
    ids = sorted(grouped)
    out: list[tuple[str, list[str]]] = []
    for i, gid in enumerate(ids):
        label = "stem" if i == 0 else f"block{i}"
        out.append((label, list(grouped[gid])))
    covered = {n for _, ps in out for n in ps}
    leftover = [n for n in names if n not in covered]
    if leftover:  # e.g. a final norm that no pattern claimed: it belongs with the last block
        out[-1][1].extend(leftover)
    return out
