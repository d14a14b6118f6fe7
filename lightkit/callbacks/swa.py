"""``SWA``: stochastic weight averaging over the last part of training, BatchNorm statistics recomputed at the end.

Why not Lightning's own: ``StochasticWeightAveraging`` counts in epochs only, replaces the module's LR
scheduler with ``SWALR`` (resuming then broke: Lightning issue 11665), recomputes BatchNorm by adding
an epoch and writing the private ``fit_loop._skip_backward``, and neither validates nor checkpoints
the averaged weights during training (issue 6074). Its newer
``WeightAveraging`` (default rule: SWA) averages BatchNorm statistics instead of recomputing them and
has the checkpoint problems listed in :mod:`lightkit.callbacks.weight_averaging`. This callback is that
base with the SWA running mean, a start in fractions of training, and torch's
``swa_utils.update_bn`` at the end.
"""

from __future__ import annotations

import itertools

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from lightkit.callbacks.weight_averaging import RawSafeWeightAveraging, ValidateWith
from lightkit.functional.averaging import SWAAverager

__all__ = ["SWA"]

_NORMS = (nn.modules.batchnorm._BatchNorm,)


class SWA(RawSafeWeightAveraging):
    """Stochastic Weight Averaging (Izmailov et al. 2018, https://arxiv.org/abs/1803.05407).

    From ``start`` (a fraction of the fit's optimizer steps) on, every ``every_n_steps``-th step folds
    the weights into an equal-weight running mean. The LR schedule is left to the module: SWA wants
    it high and flat (or cyclic) over the averaging phase, e.g. ``lightkit`` cosine with
    ``final_factor`` ~0.1-0.5, or a constant LR. During fit, validation uses the average with the
    *averaged* BatchNorm statistics (an approximation). At the end of fit the average is swapped into
    the module and, with ``update_bn``, its BatchNorm statistics are recomputed over the training
    data (torch ``swa_utils.update_bn``, ``bn_batches`` batches; under DDP each rank uses its shard and
    the statistics are averaged over ranks, so the ranks agree). Checkpoints written during fit hold
    the averaged statistics; ``trainer.save_checkpoint`` after fit stores the recomputed ones.

    Args:
        start: fraction of training, in [0, 1), after which averaging begins (0.75: the last quarter).
        every_n_steps: fold in the weights after every n-th optimizer step (>= 1).
        update_bn: recompute BatchNorm statistics of the average at the end of fit.
        bn_batches: training batches for that recomputation; ``None``: one pass over the train loader.
        validate_with: ``"ema"`` (the average, named so for all averaging callbacks), ``"raw"`` or
            ``"both"`` (the average as ``val/*``, the raw weights as ``swa/raw_val_loss`` / ``swa/raw_val_acc``).
        device: where the averaged copy lives; default the module's.

    Raises:
        ValueError: ``start`` outside [0, 1), ``every_n_steps`` < 1, ``bn_batches`` < 1, unknown ``validate_with``.

    Logged keys (``validate_with="both"``): ``swa/raw_val_loss``, ``swa/raw_val_acc``.
    """

    metric_prefix = "swa"

    def __init__(
        self,
        start: float = 0.75,
        every_n_steps: int = 1,
        update_bn: bool = True,
        bn_batches: int | None = None,
        validate_with: ValidateWith = "both",
        device: str | None = None,
    ) -> None:
        if not 0.0 <= start < 1.0:
            raise ValueError(f"SWA: start={start} must be a fraction of training in [0, 1) (0.75: the last quarter).")
        if every_n_steps < 1:
            raise ValueError(f"SWA: every_n_steps={every_n_steps} must be >= 1 (1: after every optimizer step).")
        if bn_batches is not None and bn_batches < 1:
            raise ValueError(f"SWA: bn_batches={bn_batches} must be >= 1, or None for one pass over the train loader.")
        super().__init__(SWAAverager(), validate_with=validate_with, device=device)
        self.start = start
        self.every_n_steps = every_n_steps
        self.update_bn = update_bn
        self.bn_batches = bn_batches
        self.start_step: int | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = int(self.start * trainer.estimated_stepping_batches)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Update after optimizer step ``step_idx`` (0-based) when it is ``start_step + k * every_n_steps``."""
        if step_idx is None or self.start_step is None or step_idx < self.start_step:
            return False
        return (step_idx - self.start_step) % self.every_n_steps == 0

    def on_average_swapped_in(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.update_bn or not any(isinstance(m, _NORMS) for m in pl_module.modules()):
            return
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            rank_zero_warn(f"SWA: the train loader is a {type(loader).__name__}, not one DataLoader; BatchNorm "
                           f"statistics keep their running average. Set update_bn=False to silence this.")
            return
        batches = loader if self.bn_batches is None else itertools.islice(loader, self.bn_batches)
        update_bn(batches, pl_module, device=pl_module.device)
        if trainer.world_size > 1:  # each rank saw its shard: average the statistics so the ranks agree
            for module in pl_module.modules():
                if isinstance(module, _NORMS) and module.running_mean is not None:
                    for buf in (module.running_mean, module.running_var):
                        buf.copy_(trainer.strategy.reduce(buf.clone(), reduce_op="mean"))
