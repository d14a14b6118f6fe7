"""``SpeedUp``: channels-last memory format and ``torch.compile`` for any LightningModule, from YAML.

Mixed precision, gradient accumulation and SyncBatchNorm are the Trainer's own options
(``trainer.precision: bf16-mixed``, ``trainer.accumulate_grad_batches``, ``trainer.sync_batchnorm``);
this callback adds the two speed settings the Trainer has no flag for. See ``configs/gpu.yaml``.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["SpeedUp"]

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class SpeedUp(Callback):
    """Put the module in channels-last memory format and/or compile it, before the strategy wraps it.

    - ``channels_last``: 4-D weights in NHWC order (``module.to(memory_format=torch.channels_last)``).
      Convolutions then run NHWC end to end (the input is converted once, by the first conv), which
      is what tensor cores want under bf16/fp16 mixed precision: typically 1.1-1.3x for CNNs on recent
      NVIDIA GPUs (PyTorch channels-last tutorial); on a CPU it is usually neutral.
    - ``compile``: ``module.compile(...)`` (``torch.compile`` in place: ``state_dict`` keys, checkpoints
      and callbacks see the same module). The first steps are slow while the graph compiles.

    Both are applied in ``setup`` (every stage), before DDP wraps the module and before the optimizer
    is built, so gradient buckets and optimizer state follow the new layout. Parameters stay the same
    objects.

    Args:
        channels_last: convert 4-D parameters and buffers to channels-last.
        compile: compile the module's forward with ``torch.compile``.
        compile_mode: ``torch.compile`` mode.
        compile_backend: ``torch.compile`` backend (``inductor``; ``eager`` only checks the wiring).

    Raises:
        ValueError: an unknown ``compile_mode``, or compile options without ``compile=True``.
    """

    def __init__(self, channels_last: bool = True, compile: bool = False, compile_mode: CompileMode = "default",
                 compile_backend: str = "inductor") -> None:
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if compile_mode not in modes:
            raise ValueError(f"SpeedUp: compile_mode={compile_mode!r} is not one of {list(modes)}.")
        if not compile and (compile_mode != "default" or compile_backend != "inductor"):
            raise ValueError(f"SpeedUp: compile_mode={compile_mode!r} / compile_backend={compile_backend!r} "
                             f"are set but compile=False; set compile: true or drop them.")
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend
        self._compiled: set[int] = set()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile and id(pl_module) not in self._compiled:
            pl_module.compile(mode=self.compile_mode, backend=self.compile_backend)
            self._compiled.add(id(pl_module))
        rank_zero_info(f"SpeedUp: channels_last={self.channels_last}, compile={self.compile}"
                       + (f" ({self.compile_backend}, {self.compile_mode})" if self.compile else ""))
