"""Weights files must fit the encoder: stem adaptation, architecture mismatches, unreadable files, packaged names."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from lightkit.models.encoder import create_encoder
from lightkit.models.weights import PretrainedWeightsError, packaged_weights, resolve_packaged, select_by_channels


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize(("source_chans", "target_chans"), [(1, 3), (3, 1)])
def test_stem_is_adapted_like_timm_never_dropped(tmp_path: Path, source_chans: int, target_chans: int) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=0, in_chans=source_chans)
    path = _save(source, tmp_path / "w.safetensors")
    enc = create_encoder("test_resnet", pretrained=str(path), in_chans=target_chans)
    stem = source.pretrained_cfg["first_conv"] + ".weight"
    expected = adapt_input_conv(target_chans, source.state_dict()[stem], base_chans=source_chans)
    torch.testing.assert_close(enc.state_dict()[stem], expected, rtol=0, atol=0)
    assert enc.state_dict()[stem].shape[1] == target_chans
    others = [k for k in source.state_dict() if k != stem and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(enc.state_dict()[k], source.state_dict()[k]) for k in others)


def test_packaged_encoder_on_rgb_data_adapts_the_one_channel_stem() -> None:
    gray = create_encoder("resnet10t", pretrained="lightkit:mnist5k_resnet10t", in_chans=1)
    rgb = create_encoder("resnet10t", pretrained="lightkit:mnist5k_resnet10t", in_chans=3)
    x = torch.rand(2, 1, 32, 32)
    gray.eval(), rgb.eval()
    # A gray image given as 3 equal channels gives the gray model's features (repeat and scale by 1/3;
    # the packaged weights are float16, so the scaled stem is rounded once).
    torch.testing.assert_close(rgb(x.repeat(1, 3, 1, 1)), gray(x), rtol=0, atol=5e-3)


@pytest.mark.parametrize(("file_arch", "encoder"), [("resnet10t", "resnet14t"), ("resnet14t", "resnet10t")])
def test_weights_of_another_architecture_are_refused(tmp_path: Path, file_arch: str, encoder: str) -> None:
    path = _save(timm.create_model(file_arch, num_classes=5), tmp_path / f"{file_arch}.safetensors")
    with pytest.raises(PretrainedWeightsError, match=rf"matched \d+ of \d+ tensors of encoder '{encoder}'.*"
                                                     r"another architecture.*pretrained_strict: false"):
        create_encoder(encoder, pretrained=str(path))


def test_partial_load_is_allowed_with_a_warning(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t", num_classes=0)
    path = _save(source, tmp_path / "r10.safetensors")
    with pytest.warns(UserWarning, match=r"pretrained_strict=false: \d+ encoder tensors stay randomly initialised"):
        enc = create_encoder("resnet14t", pretrained=str(path), pretrained_strict=False)
    key = "conv1.0.weight"
    assert torch.equal(enc.state_dict()[key], source.state_dict()[key])


@pytest.mark.parametrize(("content", "match"), [
    (b"", r"the file is empty"),
    (b"\x00\x01garbage" * 50, r"cannot read it as safetensors.*corrupt"),
])
def test_unreadable_safetensors_name_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(PretrainedWeightsError, match=rf"pretrained='.*broken.safetensors'.*{match}"):
        create_encoder("test_resnet", pretrained=str(path))


def test_random_bytes_pth_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(PretrainedWeightsError, match=r"random.pth.*cannot read it as a torch checkpoint"):
        create_encoder("test_resnet", pretrained=str(path))


def test_packaged_name_works_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "mnist5k_resnet10t" in packaged_weights()
    assert resolve_packaged("lightkit:mnist5k_resnet10t").is_file()
    enc = create_encoder("resnet10t", pretrained="lightkit:mnist5k_resnet10t", in_chans=1)
    assert enc.lightkit_pretrained_source.endswith("mnist5k_resnet10t.safetensors")


def test_unknown_packaged_name_lists_the_packaged_ones() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"ships no weights named 'nope'.*lightkit:mnist5k_resnet10t"):
        create_encoder("resnet10t", pretrained="lightkit:nope")


def test_close_matches_use_edit_distance() -> None:
    with pytest.raises(ValueError, match=r"encoder='resnet1O'.*'resnet10t'"):
        create_encoder("resnet1O")


def test_weights_chosen_by_channels() -> None:
    choices = {1: "lightkit:mnist5k_resnet10t_aug20", 3: "lightkit:mnist5k_resnet10t"}
    assert select_by_channels(choices, 1) == "lightkit:mnist5k_resnet10t_aug20"
    assert select_by_channels({"3": False}, 3) is False  # keys as strings (JSON) count too
    assert select_by_channels("lightkit:mnist5k_resnet10t", 3) == "lightkit:mnist5k_resnet10t"  # not a mapping
    gray = create_encoder("resnet10t", pretrained=choices, in_chans=1)
    rgb = create_encoder("resnet10t", pretrained=choices, in_chans=3)
    assert gray.lightkit_pretrained_source.endswith("mnist5k_resnet10t_aug20.safetensors")
    assert rgb.lightkit_pretrained_source.endswith("/mnist5k_resnet10t.safetensors")
    packaged = create_encoder("resnet10t", pretrained="lightkit:mnist5k_resnet10t_aug20", in_chans=1)
    assert all(torch.equal(v, packaged.state_dict()[k]) for k, v in gray.state_dict().items())
    assert not torch.equal(gray.state_dict()["conv1.0.weight"], rgb.state_dict()["conv1.0.weight"].sum(1, keepdim=True))
    with pytest.raises(PretrainedWeightsError, match=r"names no weights for in_chans=3; add an entry 3: <weights>"):
        create_encoder("resnet10t", pretrained={1: "lightkit:mnist5k_resnet10t"}, in_chans=3)
    with pytest.raises(PretrainedWeightsError, match=r"pretrained=\{'gray': .*needs keys 1-4"):
        select_by_channels({"gray": "lightkit:mnist5k_resnet10t"}, 1)
    with pytest.raises(PretrainedWeightsError, match=r"needs keys 1-4"):
        select_by_channels({}, 1)
