"""Per-step cost of handing the epoch metrics to Lightning every step vs once per epoch (issue 12).

``ImageClassifier`` updates its accuracy / F1 / top-5 ``Metric`` objects every step; Lightning only
needs them registered with ``self.log_dict`` once per epoch (it computes and resets them at the
epoch's end either way). ``per_step`` is the old path (``self.log_dict(metrics)`` every step, about
1 ms of Lightning Python per metric: it moves each logged ``Metric`` to its device on every call);
``once`` is ``EpochMetricLogging.log_metrics_once``. Same model, data, seed and number of steps; runs
alternate. A small, fast step (timm ``test_resnet``, 16 px, batch 16) makes the difference visible,
as a GPU step would.

    python benchmarks/metric_logging.py                 # 300 steps, 6 repetitions, 1 thread
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from functools import partial
from typing import Any

import torch
from lightning.pytorch import Trainer

from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier
from lightkit.models.metrics import EpochMetricLogging

ONCE = EpochMetricLogging.log_metrics_once


def _per_step(self: Any, metrics: Any, **kwargs: Any) -> None:
    self.log_dict(metrics, **kwargs)


def one_fit(mode: str, steps: int) -> float:
    EpochMetricLogging.log_metrics_once = ONCE if mode == "once" else _per_step  # type: ignore[method-assign]
    torch.manual_seed(0)
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.SGD, lr=0.01))
    data = DigitsDataModule(batch_size=16, image_size=16)
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, default_root_dir=root,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          limit_val_batches=0, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=data)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"load average before: {os.getloadavg()}", flush=True)
    one_fit("once", 20)  # warm-up
    times: dict[str, list[float]] = {"per_step": [], "once": []}
    for rep in range(args.reps):
        for mode in (("per_step", "once") if rep % 2 == 0 else ("once", "per_step")):
            times[mode].append(one_fit(mode, args.steps))
            print(f"rep {rep} {mode:>8}: {times[mode][-1]:.2f} s", flush=True)
    EpochMetricLogging.log_metrics_once = ONCE  # type: ignore[method-assign]
    old, new = (statistics.median(times[m]) for m in ("per_step", "once"))
    paired = [n / o for o, n in zip(times["per_step"], times["once"], strict=True)]
    print(f"test_resnet, 16 px, batch 16, {args.steps} steps, {args.reps} reps, 1 thread, torch {torch.__version__}; "
          f"load average after: {os.getloadavg()}")
    print(f"per_step {old:.2f} s  once {new:.2f} s  ratio once/per_step {new / old:.3f} "
          f"(per-rep median {statistics.median(paired):.3f}); saved {1000 * (old - new) / args.steps:.2f} ms per step")


if __name__ == "__main__":
    main()
