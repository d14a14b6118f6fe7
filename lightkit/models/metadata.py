"""The metadata a lightkit checkpoint carries for inference, written the same way by both models."""

from __future__ import annotations

from typing import Any

__all__ = ["inference_metadata"]


def inference_metadata(pl_module: Any) -> dict[str, Any]:
    """What inference needs besides the weights, for a checkpoint's ``"lightkit"`` entry (both models):
    the preprocessing the data module applied (else the encoder's ``data_config``) and the class names."""
    trainer = pl_module._trainer  # None outside a fit: LightningModule.trainer would raise
    preprocessing = (
        getattr(getattr(trainer, "datamodule", None), "preprocessing", None) if trainer is not None else None
    )
    return {"preprocessing": dict(preprocessing) if preprocessing else dict(pl_module.data_config),
            "class_names": pl_module.hparams.get("class_names")}
