"""lightkit's Lightning callbacks, importable as ``lightkit.callbacks.<Name>`` (also in YAML ``class_path``).

Each lives in its own module and is imported on first use, so ``import lightkit.callbacks`` stays cheap
(the monitors pull in matplotlib, the export path onnx, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ActivationMonitor": "activations",
    "Diagnose": "diagnose",
    "EMA": "ema",
    "FilterMonitor": "filters",
    "FineTune": "finetune",
    "GradientMonitor": "gradients",
    "LRRangeTest": "lr_range_test",
    "LRScaling": "lr_scaling",
    "LossCurves": "curves",
    "MixUpCutMix": "mixing",
    "PredictionWriter": "prediction_writer",
    "RawSafeWeightAveraging": "weight_averaging",
    "RegularizationSummary": "regularization",
    "SWA": "swa",
    "SaveEncoder": "save_encoder",
    "SnapshotEnsemble": "snapshot",
    "SpeedUp": "speed",
    "TTA": "tta",
    "TrainingBudget": "budget",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightkit.callbacks.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightkit.callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
