"""Verified ONNX / TorchScript export (``lightkit.export``) and the ``export`` command."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lightkit.export as export_mod
from lightkit.cli import main
from lightkit.export import (
    ExportError,
    ExportVerificationError,
    digits_example,
    export_model,
    load_classifier,
)
from lightkit.models.classifier import ImageClassifier
from tests.helpers.digits_checkpoint import digits_checkpoint

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_checkpoint(tmp_path_factory.mktemp("export_ckpt"))


@pytest.fixture()
def loaded(ckpt: Path) -> tuple[nn.Module, dict]:
    return load_classifier(ckpt)


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_load_classifier_meta(loaded: tuple[nn.Module, dict], ckpt: Path) -> None:
    model, meta = loaded
    assert isinstance(model, ImageClassifier) and not model.training
    assert meta["input_size"] == [1, 32, 32]
    assert len(meta["mean"]) == len(meta["std"]) == 1
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["encoder"] == "test_resnet" and meta["num_classes"] == 10
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    torch.testing.assert_close(model.state_dict(), state)


def test_digits_example_is_preprocessed(loaded: tuple[nn.Module, dict]) -> None:
    _, meta = loaded
    x = digits_example(meta, batch_size=5)
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.float32
    lo, hi = (0 - meta["mean"][0]) / meta["std"][0], (1 - meta["mean"][0]) / meta["std"][0]
    assert lo - 1e-6 <= float(x.min()) < float(x.max()) <= hi + 1e-6
    with pytest.raises(ExportError, match="batch_size=0 must be >= 1"):
        digits_example(meta, batch_size=0)
    with pytest.raises(ExportError, match=r"metadata lacks \['interpolation'\]"):
        digits_example({k: v for k, v in meta.items() if k != "interpolation"})


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fold_bn", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_verifies_and_writes_metadata(
    loaded: tuple[nn.Module, dict], tmp_path: Path, fmt: str, fold_bn: bool
) -> None:
    model, meta = loaded
    original = copy.deepcopy(model.state_dict())
    path = tmp_path / f"model.{fmt}"
    result = export_model(model, fmt, path, fold_bn, digits_example(meta, 8), metadata=meta)

    assert result.path == path and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".json"])
    assert result.export_max_abs_diff <= 1e-4
    torch.testing.assert_close(model.state_dict(), original)  # folding works on a copy
    info = json.loads(result.metadata_path.read_text())
    for key in ("input_size", "mean", "std", "interpolation", "class_names", "encoder"):
        assert info[key] == meta[key]
    assert info["format"] == fmt and info["fold_bn"] is fold_bn
    assert info["verification"]["atol"] == 1e-4
    assert info["verification"]["export_max_abs_diff"] == pytest.approx(result.export_max_abs_diff)
    if fold_bn:
        assert result.fold is not None and len(result.fold.folded) > 0
        assert info["fold"]["folded"] == len(result.fold.folded)
        assert result.fold_max_abs_diff is not None and result.fold_max_abs_diff <= 1e-4
    else:
        assert info["fold"] is None and info["verification"]["fold_max_abs_diff"] is None

    # Another batch size than the one exported with: the batch axis is dynamic.
    x = digits_example(meta, 5)
    with torch.no_grad():
        expected = model(x)
    if fmt == "onnx":
        assert info["input_name"] == "input" and info["verification"]["runtime"].startswith("onnxruntime")
        actual = _run_onnx(path, x)
    else:
        actual = torch.jit.load(str(path))(x)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_export_refuses_a_wrong_file(
    loaded: tuple[nn.Module, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, meta = loaded
    real_export = torch.onnx.export

    def corrupt_export(module: nn.Module, *args: object, **kwargs: object) -> object:
        bad = copy.deepcopy(module)
        with torch.no_grad():
            next(p for n, p in bad.named_parameters() if n.endswith("bias")).add_(0.01)
        return real_export(bad, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", corrupt_export)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(ExportVerificationError, match=r"onnx file differs .* max \|diff\|=.* > atol=0\.0001"):
        export_model(model, "onnx", path, False, digits_example(meta, 4), metadata=meta)
    # No temp file, no metadata; the earlier file is untouched.
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert path.read_bytes() == b"previous export"


def test_export_refuses_a_wrong_fold(
    loaded: tuple[nn.Module, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, meta = loaded
    real_fold = export_mod.fold_batchnorm

    def bad_fold(module: nn.Module, inplace: bool = False) -> tuple[nn.Module, object]:
        folded, report = real_fold(module, inplace)
        with torch.no_grad():
            next(p for n, p in folded.named_parameters() if n.endswith("conv1.bias")).add_(1.0)
        return folded, report

    monkeypatch.setattr(export_mod, "fold_batchnorm", bad_fold)
    with pytest.raises(ExportVerificationError, match=r"BatchNorm-folded model differs .* > atol=0\.0001"):
        export_model(model, "torchscript", tmp_path / "m.pt", True, digits_example(meta, 4), metadata=meta)
    assert list(tmp_path.iterdir()) == []


def test_export_with_onnx_reference_runtime(
    loaded: tuple[nn.Module, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, meta = loaded
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    result = export_model(model, "onnx", tmp_path / "m.onnx", False, digits_example(meta, 3), metadata=meta)
    assert result.runtime == "onnx.reference" and result.export_max_abs_diff <= 1e-4


def test_export_argument_errors(loaded: tuple[nn.Module, dict], tmp_path: Path) -> None:
    model, meta = loaded
    x = digits_example(meta, 2)
    with pytest.raises(ExportError, match=r"format='tflite' is not supported; use one of \['onnx', 'torchscript'\]"):
        export_model(model, "tflite", tmp_path / "m", False, x)  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="atol=0 must be > 0"):
        export_model(model, "onnx", tmp_path / "m", False, x, atol=0)
    with pytest.raises(ExportError, match=r"example must be a non-empty batch .* got \(32,\)"):
        export_model(model, "onnx", tmp_path / "m", False, x[0, 0, 0])
    with pytest.raises(ExportError, match="model must be a torch.nn.Module, got str"):
        export_model("model", "onnx", tmp_path / "m", False, x)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_load_classifier_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"checkpoint '.*missing.ckpt' does not exist"):
        load_classifier(tmp_path / "missing.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.ckpt")
    with pytest.raises(ExportError, match="is not a Lightning checkpoint with hyperparameters"):
        load_classifier(tmp_path / "plain.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(ExportError, match=r"cannot read checkpoint '.*text.ckpt' \(UnpicklingError"):
        load_classifier(tmp_path / "text.ckpt")


def test_cli_export(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deploy" / "digits.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--format", "onnx", "--fold-bn", "--output", str(out),
                 "--batch-size", "4"]) is None
    assert out.is_file() and json.loads((tmp_path / "deploy" / "digits.onnx.json").read_text())["fold_bn"] is True
    assert f"wrote {out}" in capsys.readouterr().out
    x = digits_example(load_classifier(ckpt)[1], 3)
    assert np.isfinite(_run_onnx(out, x).numpy()).all()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--ckpt", "missing.ckpt", "--format", "onnx"], 1, r"^export: checkpoint 'missing.ckpt' does not exist"),
        (["--ckpt", "x.ckpt", "--format", "tflite"], 2, r"^export: argument --format: invalid choice: 'tflite'"),
        (["--format", "onnx"], 2, r"^export: the following arguments are required: --ckpt"),
        (["--ckpt", "x.ckpt", "--format", "onnx", "--atol", "tiny"], 2, r"^export: argument --atol: invalid float"),
    ],
)
def test_cli_export_errors(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", *argv])
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
