"""``FilterMonitor``: the first convolution's filters as an image grid, at the start and after each epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from lightkit.callbacks._monitor import log_image, monitor_dir, paused

__all__ = ["FilterMonitor", "filter_grid"]

_MIN_TILE_PX = 24


def filter_grid(weight: torch.Tensor, min_tile: int = _MIN_TILE_PX) -> torch.Tensor:
    """Conv weights (O, I, kh, kw) as one uint8 image grid (3, H, W), each filter scaled to its own [0, 255].

    Three input channels are shown as RGB; any other count is averaged to gray (the filter's response
    to a gray image). Tiles are enlarged with nearest-neighbour to at least ``min_tile`` pixels, since
    3x3 or 7x7 kernels are otherwise invisible.

    Raises:
        ValueError: ``weight`` is not 4-D.
    """
    if weight.ndim != 4:
        raise ValueError(f"filter_grid: weight shape {tuple(weight.shape)} is not (out, in, kh, kw); pass a "
                         "Conv2d weight.")
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True)
    scale = max(1, math.ceil(min_tile / max(w.shape[-2:])))
    if scale > 1:
        w = F.interpolate(w, scale_factor=scale, mode="nearest")
    grid = make_grid(
        w, nrow=math.ceil(math.sqrt(w.shape[0])), padding=2, normalize=True, scale_each=True, pad_value=1.0
    )
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8)


class FilterMonitor(Callback):
    """First-layer filters as an image (CS231n "visualize the first-layer weights",
    https://cs231n.github.io/understanding-cnn/).

    Smooth, varied filters (edges, colour blobs) mean a trained stem; noisy or identical ones mean too
    little training, a too high LR or missing regularisation. The grid is written once before training
    (``filters/init.png``) and after every ``every_n_epochs`` training epochs
    (``filters/epoch=NNN.png``), under ``<dirpath>``; with a ``WandbLogger`` it is also logged as the
    image ``monitor/filters``. Rank zero only; skipped while ``lightkit_pause_monitor`` is True.

    Args:
        layer: name of the ``nn.Conv2d`` in ``pl_module.named_modules()``; default the first Conv2d
            (the stem of timm models).
        every_n_epochs: interval in training epochs (>= 1).
        dirpath: folder for the PNGs; default ``<trainer.log_dir or default_root_dir>/monitor``.

    Raises:
        ValueError: ``every_n_epochs`` < 1; in ``setup``: ``layer`` missing or not a Conv2d, or no Conv2d.
    """

    def __init__(self, layer: str | None = None, every_n_epochs: int = 1, dirpath: str | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"FilterMonitor: every_n_epochs={every_n_epochs} must be >= 1 (training "
                             "epochs).")
        self.layer = layer
        self.every_n_epochs = every_n_epochs
        self.dirpath = dirpath
        self.files: list[str] = []
        self._conv: nn.Conv2d | None = None
        self._dir = Path(dirpath) if dirpath else Path("monitor")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.files = []  # a new fit starts afresh; load_state_dict (after setup) restores a resumed one
        self._dir = monitor_dir(trainer, self.dirpath)
        modules = dict(pl_module.named_modules())
        if self.layer is None:
            convs = [m for m in modules.values() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ValueError(f"FilterMonitor: {type(pl_module).__name__} has no nn.Conv2d; drop the "
                                 "callback or name a layer.")
            self._conv = convs[0]
            return
        module = modules.get(self.layer)
        if not isinstance(module, nn.Conv2d):
            found = "missing" if module is None else f"a {type(module).__name__}"
            raise ValueError(
                f"FilterMonitor: layer={self.layer!r} is {found} in {type(pl_module).__name__}; name an "
                "nn.Conv2d "
                f"from named_modules() or leave layer unset for the first one."
            )
        self._conv = module

    def save(self, path: str | Path) -> Path:
        """Write the current filter grid of the watched layer to a PNG at ``path``.

        Raises:
            RuntimeError: called before ``setup`` (no layer chosen yet).
        """
        if self._conv is None:
            raise RuntimeError("FilterMonitor.save: no layer yet; call it after trainer.fit has started "
                               "(setup picks the layer).")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(filter_grid(self._conv.weight).permute(1, 2, 0).numpy()).save(path)
        return path

    def _write(self, trainer: Trainer, pl_module: LightningModule, name: str) -> None:
        if not trainer.is_global_zero or paused(trainer, pl_module) or self._conv is None:
            return
        path = self.save(self._dir / "filters" / name)
        self.files.append(str(path))
        log_image(trainer, "monitor/filters", path, trainer.global_step)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step == 0:
            self._write(trainer, pl_module, "init.png")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer, pl_module, f"epoch={trainer.current_epoch:03d}.png")

    def state_dict(self) -> dict[str, Any]:
        return {"files": self.files}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.files = list(state_dict.get("files", []))
