"""Overhead of the monitoring callbacks at their default intervals (issue 9 evidence; goal <= 3 %).

The same short fit (timm ``test_resnet``, digits at 32 px, AdamW, fixed number of optimizer steps, no
validation, no logger) with and without ``ActivationMonitor`` + ``GradientMonitor`` + ``LossCurves`` +
``Diagnose``, all at their defaults. Runs alternate (plain, monitored, then monitored, plain on the
next repetition) so that load drift on a shared machine hits both arms equally. Two figures per run:

- ``loop``: seconds from the first training batch to the end of the last one (the per-step cost the
  <= 3 % goal is about: hooks on logging steps, host syncs);
- ``fit``: the whole ``trainer.fit`` call, which adds the end-of-fit PNGs (matplotlib) once per run.

    python benchmarks/monitor_overhead.py                    # 200 steps, batch 16, 1 thread, 3 repetitions
    python benchmarks/monitor_overhead.py --steps 500 --reps 5 --model resnet10t
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightkit.callbacks.activations import ActivationMonitor
from lightkit.callbacks.curves import LossCurves
from lightkit.callbacks.diagnose import Diagnose
from lightkit.callbacks.gradients import GradientMonitor
from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier


class LoopTimer(Callback):
    """Wall time from the start of the first training batch to the end of the last one."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.t1 = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.t1 = time.perf_counter()


def one_fit(model_name: str, steps: int, batch_size: int, monitored: bool) -> tuple[float, float]:
    """``(loop seconds, fit seconds)`` of one fit from the same seed."""
    torch.manual_seed(0)
    model = ImageClassifier(encoder=model_name, num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.AdamW, lr=1e-3))
    data = DigitsDataModule(batch_size=batch_size, image_size=32)
    timer = LoopTimer()
    callbacks: list[Callback] = [timer]
    if monitored:
        callbacks += [ActivationMonitor(), GradientMonitor(), LossCurves(), Diagnose()]
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, default_root_dir=root,
                          callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=data)
        fit = time.perf_counter() - t0
    assert timer.t0 is not None
    return timer.t1 - timer.t0, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: on a shared, loaded CPU more threads oversubscribe it.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    one_fit(args.model, 5, args.batch_size, True)  # warm-up: imports (matplotlib), allocator, data cache
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for rep in range(args.reps):
        for monitored in ((False, True) if rep % 2 == 0 else (True, False)):
            times[monitored].append(one_fit(args.model, args.steps, args.batch_size, monitored))
            loop, fit = times[monitored][-1]
            print(f"rep {rep} {'monitored' if monitored else 'plain    '}: loop {loop:.2f} s  fit {fit:.2f} s", flush=True)
    print(f"\n{args.model}, {args.steps} steps, batch {args.batch_size}, 32 px, {args.reps} reps, "
          f"{args.threads} threads, torch {torch.__version__}")
    for i, label in enumerate(("loop", "fit")):
        plain = statistics.median(t[i] for t in times[False])
        monitored = statistics.median(t[i] for t in times[True])
        print(f"{label:>4}: plain {plain:.2f} s  monitored {monitored:.2f} s  ratio {monitored / plain:.3f} "
              f"({100 * (monitored / plain - 1):+.1f} %)")


if __name__ == "__main__":
    main()
