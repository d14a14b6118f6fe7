"""LR range test on the embedded digits: an 8-point LR grid vs the ``valley`` suggestion, and the sweep's cost.

    python benchmarks/lr_find.py                       # 3 seeds, 60 steps per run, test_resnet at 16 px

Accuracy: each LR of a log-spaced grid (AdamW, constant LR, the same 60 steps) over 3 seeds, against a run
whose LR is the ``valley`` suggestion of :class:`~lightkit.callbacks.lr_range_test.LRRangeTest` (default
settings, ``apply: true``, the same 60 steps after the sweep). Goal: the suggestion's test accuracy within 1
point of the grid's best. Cost: the sweep plus its restore (``on_train_start`` of the callback) against
``num_steps`` ordinary training steps of the same model, alternating, repeated; goal <= 1.1x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from functools import partial

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from lightkit.callbacks.lr_range_test import LRRangeTest  # noqa: E402
from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.models import ImageClassifier  # noqa: E402


class Stamp(Callback):
    """Records ``time.perf_counter()`` at train start, after ``steps`` batches, and at train end."""

    def __init__(self, steps: int | None = None) -> None:
        self.steps, self.times = steps, {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.times.setdefault("start", time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.steps is not None and trainer.global_step == self.steps and "steps" not in self.times:
            self.times["steps"] = time.perf_counter()


def _fit(seed: int, lr: float, steps: int,
         callbacks: list[Callback]) -> tuple[Trainer, ImageClassifier, DigitsDataModule]:
    seed_everything(seed, verbose=False)
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.01))
    dm = DigitsDataModule(batch_size=64, image_size=16, seed=seed)
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=callbacks, default_root_dir="runs/bench_lr_find")
    trainer.fit(model, datamodule=dm)
    return trainer, model, dm


def _test_acc(trainer: Trainer, model: ImageClassifier, dm: DigitsDataModule) -> float:
    return float(trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"])


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of every training run")
    parser.add_argument("--grid", type=float, nargs=2, default=[1e-5, 1.0], help="first and last LR of the grid")
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--cost-reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("load at start:", _load(), flush=True)
    grid = [float(x) for x in np.logspace(np.log10(args.grid[0]), np.log10(args.grid[1]), args.points)]

    acc: dict[float, list[float]] = {lr: [] for lr in grid}
    valley_acc, valley_lr = [], []
    for seed in args.seeds:
        for lr in grid:
            acc[lr].append(_test_acc(*_fit(seed, lr, args.steps, [])))
            print(f"seed={seed} lr={lr:.3g} test_acc={acc[lr][-1]:.4f}", flush=True)
        finder = LRRangeTest(apply=True)
        trainer, model, dm = _fit(seed, 1e-3, args.steps, [finder])
        valley_lr.append(finder.results["lr"])
        valley_acc.append(_test_acc(trainer, model, dm))
        s = finder.results["suggestions"]
        print(f"seed={seed} valley lr={valley_lr[-1]:.3g} (steepest {s['steepest']:.3g}, minimum {s['minimum']:.3g}) "
              f"test_acc={valley_acc[-1]:.4f}", flush=True)

    print("\n| LR | test acc (mean +- std over seeds) |\n|---:|---:|")
    means = {lr: statistics.mean(v) for lr, v in acc.items()}
    for lr, v in acc.items():
        print(f"| {lr:.3g} | {100 * means[lr]:.2f} +- {100 * statistics.stdev(v) if len(v) > 1 else 0:.2f} % |")
    best_lr = max(means, key=means.get)
    vmean = statistics.mean(valley_acc)
    print(f"| valley ({', '.join(f'{x:.3g}' for x in valley_lr)}) | {100 * vmean:.2f} +- "
          f"{100 * statistics.stdev(valley_acc) if len(valley_acc) > 1 else 0:.2f} % |")
    gap = 100 * (means[best_lr] - vmean)
    print(f"\ngrid best: lr={best_lr:.3g} {100 * means[best_lr]:.2f} %; valley is {gap:.2f} points below "
          f"-> goal (<= 1 point) {'met' if gap <= 1.0 else 'NOT met'}")

    # Cost: sweep + restore vs num_steps ordinary steps, alternating which goes first.
    sweep_s, plain_s, sweep_steps = [], [], []
    num_steps = LRRangeTest().num_steps
    for rep in range(args.cost_reps):
        for arm in (("sweep", "plain") if rep % 2 == 0 else ("plain", "sweep")):
            if arm == "sweep":
                before, finder, after = Stamp(), LRRangeTest(), Stamp()
                _fit(0, 1e-3, 1, [before, finder, after])
                sweep_s.append(after.times["start"] - before.times["start"])
                sweep_steps.append(len(finder.results["lrs"]))
            else:
                stamp = Stamp(num_steps)
                _fit(0, 1e-3, num_steps, [stamp])
                plain_s.append(stamp.times["steps"] - stamp.times["start"])
        print(f"rep {rep}: sweep+restore {sweep_s[-1]:.2f} s ({sweep_steps[-1]} steps), "
              f"{num_steps} plain steps {plain_s[-1]:.2f} s", flush=True)
    ratio = statistics.median(sweep_s) / statistics.median(plain_s)
    per_step = statistics.median(s / n for s, n in zip(sweep_s, sweep_steps, strict=True)) / (
        statistics.median(plain_s) / num_steps)
    print(f"\nsweep cost: median {statistics.median(sweep_s):.2f} s vs {statistics.median(plain_s):.2f} s for "
          f"{num_steps} steps -> ratio {ratio:.3f} (per step {per_step:.3f}); goal <= 1.1: "
          f"{'met' if ratio <= 1.1 else 'NOT met'}")
    print("load at end:", _load(), flush=True)


if __name__ == "__main__":
    main()
