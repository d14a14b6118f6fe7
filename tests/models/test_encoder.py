"""Encoder creation and pretrained weights with no network: file, folder, HF cache, fast failure."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from lightkit.models.encoder import (
    PretrainedWeightsError,
    create_encoder,
    encoder_data_config,
    encoder_layer_groups,
    hub_reachable,
)

NAME = "test_resnet"


def _source_model(num_classes: int = 7, in_chans: int = 3) -> torch.nn.Module:
    torch.manual_seed(123)
    return timm.create_model(NAME, num_classes=num_classes, in_chans=in_chans)


def _same_encoder_weights(encoder: torch.nn.Module, source: torch.nn.Module) -> bool:
    src = source.state_dict()
    return all(torch.equal(v, src[k]) for k, v in encoder.state_dict().items())


def _fake_hf_cache(root: Path, repo_id: str, model: torch.nn.Module) -> None:
    """The layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/model.safetensors."""
    repo_dir = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))


def test_random_init_has_no_classifier() -> None:
    enc = create_encoder(NAME, in_chans=1)
    out = enc(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, enc.num_features)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_local_weight_file_drops_source_classifier(tmp_path: Path, suffix: str) -> None:
    source = _source_model(num_classes=7)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    enc = create_encoder(NAME, pretrained=str(path))
    assert _same_encoder_weights(enc, source)
    assert not any(k.startswith("fc.") for k in enc.state_dict())


def test_lightning_checkpoint_of_lightkit_model(tmp_path: Path) -> None:
    from lightkit.models.classifier import ImageClassifier

    module = ImageClassifier(encoder=NAME, num_classes=4, in_chans=1)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, path)
    enc = create_encoder(NAME, pretrained=str(path), in_chans=1)
    assert _same_encoder_weights(enc, module.encoder)


def test_local_dir_from_save_for_hf(tmp_path: Path) -> None:
    source = _source_model(num_classes=5)
    timm.models.save_for_hf(source, str(tmp_path / "m"), safe_serialization=True)
    enc = create_encoder(NAME, pretrained=f"local-dir:{tmp_path / 'm'}")
    assert _same_encoder_weights(enc, source)


def test_hf_cache_resolves_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source_model(num_classes=1000)
    repo = timm.models.get_pretrained_cfg(NAME).hf_hub_id
    _fake_hf_cache(tmp_path, repo, source)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    enc_default = create_encoder(NAME, pretrained=True)
    enc_repo = create_encoder(NAME, pretrained=f"hf-hub:{repo}")
    assert time.perf_counter() - t0 < 10
    assert _same_encoder_weights(enc_default, source)
    assert _same_encoder_weights(enc_repo, source)


def test_missing_from_cache_fails_fast_with_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    # Simulate a network that swallows packets: the probe must give up on its own timeout.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("lightkit.models.encoder.HUB_HOST", "10.255.255.1")
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"not in the local Hugging Face cache.*pretrained: false"):
        create_encoder("resnet18", pretrained=True, probe_timeout=1.0)
    assert time.perf_counter() - t0 < 10


def test_hub_probe_is_bounded() -> None:
    t0 = time.perf_counter()
    assert hub_reachable("10.255.255.1", timeout=0.5) is False
    assert time.perf_counter() - t0 < 2


def test_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match=r"no such file"):
        create_encoder(NAME, pretrained=str(tmp_path / "nope.safetensors"))


def test_unrelated_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    with pytest.raises(PretrainedWeightsError, match=r"no tensor in the file matches"):
        create_encoder(NAME, pretrained=str(path))


def test_local_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match=r"has no config.json"):
        create_encoder(NAME, pretrained=f"local-dir:{tmp_path}")


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"encoder='resnet_does_not_exist' is not a timm model"):
        create_encoder("resnet_does_not_exist")


def test_data_config_follows_channels() -> None:
    cfg = encoder_data_config(create_encoder("resnet10t", in_chans=1))
    assert cfg["input_size"][0] == 1 and len(cfg["mean"]) == 1 and len(cfg["std"]) == 1
    assert cfg["mean"][0] == pytest.approx((0.485 + 0.456 + 0.406) / 3)


def test_layer_groups_cover_every_parameter_once() -> None:
    enc = create_encoder(NAME)
    groups = encoder_layer_groups(enc)
    names = [n for _, ps in groups for n in ps]
    assert groups[0][0] == "stem" and len(groups) >= 3
    assert sorted(names) == sorted(n for n, _ in enc.named_parameters())
    assert len(names) == len(set(names))
