"""Write the encoder's weights to a ``.safetensors`` file at the end of a fit, for transfer learning."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["SaveEncoder", "save_encoder_weights"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_encoder_weights(encoder: torch.nn.Module, path: str | Path, dtype: str = "float32") -> str:
    """Save ``encoder.state_dict()`` as safetensors (floating tensors cast to ``dtype``); return its sha256.

    The file loads with ``ImageClassifier(pretrained=path)`` or timm's
    ``pretrained_cfg_overlay=dict(file=path)``. ``float16`` halves the size; the rounding (~1e-3
    relative) is irrelevant for an initialisation that fine-tuning moves anyway.
    """
    from safetensors.torch import save_file

    if dtype not in _DTYPES:
        raise ValueError(f"SaveEncoder: dtype={dtype!r} is not one of {sorted(_DTYPES)}.")
    state = {
        k: (v.to(_DTYPES[dtype]) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in encoder.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SaveEncoder(Callback):
    """At the end of ``fit``, load the best checkpoint (if any) and save its encoder weights.

    Args:
        path: output ``.safetensors`` file.
        dtype: storage dtype of floating tensors (``float32``, ``float16``, ``bfloat16``).
        use_best: take the weights of ``ModelCheckpoint``'s best checkpoint, not the last step's.
        attribute: the LightningModule's attribute that holds the encoder (``encoder`` in lightkit's
            models; e.g. ``net`` or ``backbone`` in your own module; dotted for a nested one: ``net.body``).

    Raises:
        ValueError: unknown dtype, a path that is not ``.safetensors``; in ``setup``: no module at ``attribute``.
    """

    def __init__(self, path: str, dtype: Literal["float32", "float16", "bfloat16"] = "float32", use_best: bool = True,
                 attribute: str = "encoder") -> None:
        if not path.endswith(".safetensors"):
            raise ValueError(f"SaveEncoder: path={path!r} must end with .safetensors.")
        if dtype not in _DTYPES:
            raise ValueError(f"SaveEncoder: dtype={dtype!r} is not one of {sorted(_DTYPES)}.")
        self.path = path
        self.dtype = dtype
        self.use_best = use_best
        self.attribute = attribute
        self.sha256: str | None = None

    def _module(self, pl_module: LightningModule) -> torch.nn.Module | None:
        try:
            module = pl_module.get_submodule(self.attribute)
        except AttributeError:
            return None
        return module if module is not pl_module else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._module(pl_module) is None:
            children = [name for name, _ in pl_module.named_children()]
            raise ValueError(f"SaveEncoder: {type(pl_module).__name__} has no module at attribute={self.attribute!r}; "
                             f"its modules are {children}: name the encoder's (e.g. attribute: "
                             f"{children[0] if children else 'net'}).")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        module = self._module(pl_module)
        prefix = f"{self.attribute}."
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if self.use_best and best:
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            current = {k: v.clone() for k, v in module.state_dict().items()}
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            try:
                self.sha256 = save_encoder_weights(module, self.path, self.dtype)
            finally:
                module.load_state_dict(current)  # the fit's own weights stay as they were
        else:
            self.sha256 = save_encoder_weights(module, self.path, self.dtype)
        size = Path(self.path).stat().st_size / 1e6
        rank_zero_info(f"lightkit: encoder weights -> {self.path} ({size:.2f} MB, sha256 {self.sha256})")
