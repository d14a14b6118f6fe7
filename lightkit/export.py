"""Verified export of a trained model to ONNX or TorchScript, with its preprocessing next to it.

An exported file is only useful if it computes what the PyTorch model computes, and if the user
knows how to feed it. So :func:`export_model` (1) optionally folds BatchNorm into the convolutions
(:func:`lightkit.functional.fold.fold_batchnorm`) and checks the folded model against the original,
(2) exports, (3) runs the *file* on a batch of real images (onnxruntime, or onnx's reference
evaluator without it; ``torch.jit.load`` for TorchScript) and compares it with PyTorch, and only then
(4) moves the file into place and writes ``<path>.json`` with the preprocessing (input size, mean,
std, interpolation), the class names and the measured differences. A check that fails raises
:class:`ExportVerificationError` and leaves nothing behind (an existing file at ``path`` is kept).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``): torch >= 2.9 defaults to the
``torch.export`` one, which needs ``onnxscript`` (not a lightkit dependency) and raises
``ModuleNotFoundError`` without it. The legacy exporter warns that it is deprecated; that warning is
silenced here because the choice is deliberate.

``export_model`` takes any ``nn.Module`` whose ``forward(x)`` returns one tensor; a
``MultiTaskClassifier`` checkpoint is exported as its main task's encoder and head (the auxiliary heads
are left out: they serve training only).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import nn

from lightkit.functional.fold import FoldReport, fold_batchnorm

__all__ = [
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "ExportVerificationError",
    "digits_example",
    "export_model",
    "load_classifier",
]

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
# ONNX opset: 17 is read by every onnxruntime since 1.11 and has all ops a timm CNN needs.
_OPSET = 17
_INPUT, _OUTPUT = "input", "logits"
_PREPROCESSING_KEYS = ("input_size", "mean", "std", "interpolation")


class ExportError(ValueError):
    """An export cannot be done as asked; the message names the value and the fix."""


class ExportVerificationError(ExportError):
    """The folded model or the exported file does not reproduce the PyTorch model within ``atol``."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        path: the verified model file.
        metadata_path: ``<path>.json`` with preprocessing, class names and the checks below.
        format: ``"onnx"`` or ``"torchscript"``.
        fold: the BatchNorm folding report, ``None`` without ``fold_bn``.
        fold_max_abs_diff: max |folded - original| over the verification batch (``None`` without fold).
        export_max_abs_diff: max |exported file - PyTorch model it was exported from|.
        atol: the tolerance both differences were held to.
        runtime: what ran the file for the check (``onnxruntime 1.x``, ``onnx.reference``, ``torch.jit``).
    """

    path: Path
    metadata_path: Path
    format: str
    fold: FoldReport | None
    fold_max_abs_diff: float | None
    export_max_abs_diff: float
    atol: float
    runtime: str


# -- loading -------------------------------------------------------------------------------------
def load_classifier(ckpt_path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load an :class:`~lightkit.models.ImageClassifier` checkpoint on CPU, in eval mode, plus its metadata.

    A :class:`~lightkit.models.multitask.MultiTaskClassifier` checkpoint gives its main task's encoder +
    head (:meth:`~lightkit.models.multitask.MultiTaskClassifier.main_task_model`) and ``meta["task"]``.

    The network is built with ``pretrained=False`` whatever the checkpoint's hyperparameters say: the
    weights come from the checkpoint, and a pretrained-weights file named at training time need not
    exist where the model is deployed.

    Args:
        ckpt_path: a Lightning checkpoint written while fitting an ``ImageClassifier``.

    Returns:
        ``(model, meta)``; ``meta`` holds ``input_size`` (C, H, W), ``mean``, ``std`` (0..1 scale),
        ``interpolation``, ``class_names``, ``encoder``, ``num_classes`` and ``checkpoint``.

    Raises:
        ExportError: the file does not exist, or is not a Lightning checkpoint of an ``ImageClassifier``.
    """
    from lightkit.models.classifier import ImageClassifier

    path = Path(ckpt_path)
    if not path.is_file():
        raise ExportError(f"export: checkpoint {str(path)!r} does not exist; give the path of a .ckpt file "
                          f"written by `python cli.py fit`.")
    try:
        # The checkpoint holds hyperparameters (plain Python objects), not only tensors.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure means: not a checkpoint we can read
        raise ExportError(f"export: cannot read checkpoint {str(path)!r} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); "
                          "give a .ckpt written by lightkit.") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ExportError(f"export: {str(path)!r} is not a Lightning checkpoint with hyperparameters (no "
                          f"'state_dict' / 'hyper_parameters'); give a .ckpt written by `python cli.py fit`.")
    # A MultiTaskClassifier (its hyperparameters declare tasks) is exported as its main task alone.
    multitask = "tasks" in checkpoint["hyper_parameters"]
    if multitask:
        from lightkit.models.multitask import MultiTaskClassifier as model_class
    else:
        model_class = ImageClassifier
    try:
        model = model_class.load_from_checkpoint(path, map_location="cpu", pretrained=False)
    except (TypeError, RuntimeError, KeyError, ValueError) as err:
        raise ExportError(f"export: {str(path)!r} is not an {model_class.__name__} checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}).") from err
    model.eval()
    extra = checkpoint.get("lightkit") or {}
    # Older checkpoints lack the "lightkit" entry: fall back to the encoder's own preprocessing.
    preprocessing = dict(extra.get("preprocessing") or model.data_config)
    hparams = model.hparams
    num_classes = int(hparams["num_classes"])
    class_names = extra.get("class_names") or hparams.get("class_names") or [str(i) for i in range(num_classes)]
    meta: dict[str, Any] = {
        "input_size": [int(v) for v in preprocessing["input_size"]],
        "mean": [float(v) for v in preprocessing["mean"]],
        "std": [float(v) for v in preprocessing["std"]],
        "interpolation": str(preprocessing.get("interpolation") or "bilinear"),
        "class_names": [str(c) for c in class_names],
        "encoder": str(hparams["encoder"]),
        "num_classes": num_classes,
        "checkpoint": str(path),
    }
    if multitask:
        meta["task"] = model.main_task
        return model.main_task_model().eval(), meta
    return model, meta


def digits_example(meta: Mapping[str, Any], batch_size: int = 8) -> torch.Tensor:
    """A batch of real images for verification: sklearn's digits, preprocessed as ``meta`` says.

    Real pixels exercise the value ranges the model sees in use, which random noise does not. The
    images go through the same helpers as :class:`lightkit.data.DigitsDataModule` (channels, resize,
    normalise), at the model's ``input_size``, ``interpolation``, ``mean`` and ``std``.

    Args:
        meta: ``input_size`` (C, H, W), ``mean``, ``std``, ``interpolation`` (as from :func:`load_classifier`).
        batch_size: images in the batch (at most 1797), the classes in turn (0, 1, ..., 9, 0, ...).

    Raises:
        ExportError: ``batch_size`` < 1 or ``meta`` lacks a preprocessing key.
    """
    from sklearn.datasets import load_digits

    from lightkit.data.images import normalize, resize_images, to_channels

    if batch_size < 1:
        raise ExportError(f"export: batch_size={batch_size} must be >= 1 (images in the verification batch).")
    missing = [k for k in _PREPROCESSING_KEYS if k not in meta]
    if missing:
        raise ExportError(f"export: metadata lacks {missing}; give input_size, mean, std and interpolation.")
    channels, height, width = (int(v) for v in meta["input_size"])
    digits = load_digits()
    # The set starts 0, 1, ..., 9, 0, 1 ...: the first images cover the classes in turn.
    images = np.rint(digits.images[:batch_size] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    x = resize_images(to_channels(images, channels), (height, width), str(meta["interpolation"]))
    return normalize(x, meta["mean"], meta["std"])


# -- export --------------------------------------------------------------------------------------
def _max_abs_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a_t = torch.as_tensor(a).detach().float().cpu()
    b_t = torch.as_tensor(b).detach().float().cpu()
    if a_t.shape != b_t.shape:
        return float("inf")
    return float((a_t - b_t).abs().max()) if a_t.numel() else 0.0


@contextlib.contextmanager
def _chosen_legacy_apis() -> Iterator[None]:
    """Silence the deprecation warnings of the two legacy paths used on purpose (module docstring):
    the TorchScript-based ONNX exporter and ``torch.jit`` (deprecated in favour of ``torch.export``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    axes = {_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}}
    torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[_INPUT],
                      output_names=[_OUTPUT], dynamic_axes=axes, opset_version=_OPSET)


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    if isinstance(module, LightningModule):
        # Plain torch.jit.trace reads every attribute, and a LightningModule's `trainer` raises when
        # detached; Lightning's own tracing entry point marks the module as being scripted.
        traced = module.to_torchscript(method="trace", example_inputs=example)
    else:
        traced = torch.jit.trace(module, example, check_trace=False)  # the saved file is checked instead
    torch.jit.save(traced, str(path))


def _onnx_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """onnxruntime (CPU) when installed, else onnx's pure-Python reference evaluator."""
    try:
        import onnxruntime as ort
    except ImportError:
        try:
            from onnx.reference import ReferenceEvaluator
        except ImportError as err:
            raise ExportError("export: cannot verify the ONNX file: neither onnxruntime nor onnx is installed; "
                              "pip install onnxruntime.") from err
        evaluator = ReferenceEvaluator(str(path))
        return (lambda x: evaluator.run(None, {_INPUT: x})[0]), "onnx.reference"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda x: session.run(None, {_INPUT: x})[0]), f"onnxruntime {ort.__version__}"


def _run_file(fmt: str, path: Path, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    if fmt == "onnx":
        run, runtime = _onnx_runner(path)
        return torch.from_numpy(np.asarray(run(x.detach().cpu().numpy()))), runtime
    loaded = torch.jit.load(str(path), map_location=x.device)
    with torch.no_grad():
        return loaded(x), "torch.jit"


def _fold_summary(report: FoldReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "folded": len(report.folded),
        "unfolded": [{"name": u.name, "type": u.bn_type, "reason": u.reason} for u in report.unfolded],
        "notes": list(report.notes),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.tolist()
    return str(value)


def export_model(
    model: nn.Module,
    fmt: ExportFormat,
    path: str | os.PathLike[str],
    fold_bn: bool,
    example: torch.Tensor,
    atol: float = 1e-4,
    metadata: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export ``model`` to ``path`` only if the written file reproduces it on ``example``.

    ``model`` is put in eval mode (in place). With ``fold_bn`` a folded copy is exported; the
    original is left as it is. The export is traced with the first two images of ``example`` and
    verified on all of them, so a batch size baked into the graph shows up as a failure; the batch
    axis is dynamic in both formats.

    Args:
        model: any module whose ``forward(x)`` returns one tensor (the logits).
        fmt: ``"onnx"`` (opset 17, input ``"input"``, output ``"logits"``) or ``"torchscript"``
            (``torch.jit.trace``).
        path: where the file goes; ``<path>.json`` gets the metadata. Its folder is created.
        fold_bn: fold BatchNorm into the preceding convolutions before exporting.
        example: a batch of real, preprocessed inputs (N, C, H, W) on the model's device, e.g.
            :func:`digits_example`; N >= 3 also checks the dynamic batch axis.
        atol: largest allowed max absolute difference of the outputs (logits units), for the folded
            model vs the original and for the file vs the module it was exported from.
        metadata: written into the JSON as is (preprocessing, class names, encoder ...).

    Returns:
        What was written and the measured differences.

    Raises:
        ExportError: an unknown ``fmt``, a non-positive ``atol``, an ``example`` that is not a batched
            tensor, or an export that torch cannot do (the message names the cause).
        ExportVerificationError: the folded model or the file differs by more than ``atol``; nothing is written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export: format={fmt!r} is not supported; use one of {list(FORMATS)}.")
    if not isinstance(model, nn.Module):
        raise ExportError(f"export: model must be a torch.nn.Module, got {type(model).__name__}.")
    if not atol > 0:
        raise ExportError(f"export: atol={atol} must be > 0 (max absolute output difference allowed).")
    if not isinstance(example, torch.Tensor) or example.ndim < 2 or len(example) == 0:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise ExportError("export: example must be a non-empty batch (N, C, H, W) of preprocessed images, "
                          f"got {shape}.")
    path = Path(path)
    model.eval()
    with torch.no_grad():
        reference = model(example)
        module, report, fold_diff = model, None, None
        if fold_bn:
            module, report = fold_batchnorm(model)
            fold_diff = _max_abs_diff(module(example), reference)
            if not fold_diff <= atol:
                raise ExportVerificationError(
                    f"export: the BatchNorm-folded model differs from the original by max |diff|={fold_diff:.3g} > "
                    f"atol={atol:g}; export without --fold-bn or raise atol."
                )
        expected = module(example)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _chosen_legacy_apis():
            try:
                (_write_onnx if fmt == "onnx" else _write_torchscript)(module, example[:2], tmp)
            except (RuntimeError, torch.jit.Error, torch.onnx.errors.OnnxExporterError) as err:  # type: ignore[attr-defined]
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ExportError(f"export: torch could not export the model to {fmt} ({first}); "
                                  f"try the other format.") from err
            actual, runtime = _run_file(fmt, tmp, example)
        export_diff = _max_abs_diff(actual, expected)
        if not export_diff <= atol:
            raise ExportVerificationError(
                f"export: the {fmt} file differs from the PyTorch model by max |diff|={export_diff:.3g} > "
                f"atol={atol:g} on {len(example)} inputs; refusing to write {str(path)!r}."
            )
        meta_path = path.with_name(path.name + ".json")
        info = {
            **dict(metadata or {}),
            "format": fmt,
            "file": path.name,
            "input_name": _INPUT if fmt == "onnx" else None,
            "output_name": _OUTPUT if fmt == "onnx" else None,
            "input_layout": "NCHW float32, (pixel / 255 - mean) / std",
            "fold_bn": fold_bn,
            "fold": _fold_summary(report),
            "verification": {"atol": atol, "fold_max_abs_diff": fold_diff, "export_max_abs_diff": export_diff,
                             "batch_size": len(example), "runtime": runtime},
            "torch_version": torch.__version__,
        }
        os.replace(tmp, path)
        meta_path.write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, meta_path, fmt, report, fold_diff, export_diff, atol, runtime)
