"""LR schedules on the embedded digits, same model and step budget: the CLR paper's claim, measured.

    python benchmarks/schedules.py --steps 150 --seeds 0 1 2 --encoder test_resnet --image-size 16

Per seed, five runs of SGD (momentum 0.9, Nesterov, weight decay 5e-4, peak LR ``--lr``) that differ only
in the LR schedule, all stepped per optimizer step: constant, step decay (x0.2 every third of the budget),
cosine (to 0), CLR triangular2 (3 cycles between lr/4 and lr, Smith 2017) and one-cycle (Smith & Topin
2019, 25 % warm-up from lr/25, momentum cycled 0.95 -> 0.85 -> 0.95). Validation accuracy is measured
every ``--every`` steps on the fixed validation split; the final model is scored on the test split.

Reported: final test accuracy per schedule (mean +- std over seeds), and the steps each schedule needs
for its validation accuracy to reach the constant-LR run's final validation accuracy (same seed), the
claim of Smith's "Cyclical Learning Rates for Training Neural Networks" (same accuracy in a fraction of
the iterations). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.lr_schedulers import Constant, Cosine, Cyclic, OneCycle, StepDecay  # noqa: E402
from lightkit.models.classifier import ImageClassifier  # noqa: E402


def schedules(steps: int) -> dict[str, partial | None]:
    """Scheduler factories; durations in optimizer steps (``ImageClassifier`` passes ``total_steps``)."""
    return {
        "constant": partial(Constant),
        "step decay": partial(StepDecay, step_size=max(1, steps // 3), gamma=0.2),
        "cosine": partial(Cosine, final_factor=0.0),
        "CLR triangular2": partial(Cyclic, step_size=max(1, steps // 6), div_factor=4.0, mode="triangular2"),
        "one-cycle": partial(OneCycle, pct_start=0.25, div_factor=25.0, final_div_factor=1e4),
    }


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x.to(model.device)).argmax(1) == y.to(model.device)).sum())
        total += len(y)
    model.train(was_training)
    return correct / total


class EveryNSteps(Callback):
    """Validation accuracy every ``every`` optimizer steps, outside Lightning's loop (no logging overhead)."""

    def __init__(self, batches: list, every: int) -> None:
        self.batches, self.every, self.curve = batches, every, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            self.curve.append((step, accuracy(pl_module, self.batches)))


def run(name: str, factory: partial, seed: int, args: argparse.Namespace) -> tuple[list, float]:
    seed_everything(seed)
    sgd = partial(torch.optim.SGD, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model = ImageClassifier(encoder=args.encoder, num_classes=10, in_chans=1, optimizer=sgd, lr_scheduler=factory)
    dm = DigitsDataModule(batch_size=64, image_size=args.image_size, seed=0)  # same splits for every seed
    dm.setup("fit")
    val = list(dm.val_dataloader())
    probe = EveryNSteps(val, args.every)
    trainer = Trainer(max_steps=args.steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                      default_root_dir=Path(args.root) / f"{name}-{seed}", callbacks=[probe],
                      limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    dm.setup("test")
    return probe.curve, accuracy(model, list(dm.test_dataloader()))


def first_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, acc in curve if acc >= target - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--encoder", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--root", default="runs/bench_schedules")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    curves: dict[str, dict[int, list]] = {}
    tests: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name, factory in schedules(args.steps).items():
            t = time.perf_counter()
            curve, test = run(name, factory, seed, args)
            curves.setdefault(name, {})[seed] = curve
            tests.setdefault(name, []).append(test)
            print(f"seed {seed} {name}: test acc {test:.4f}, final val {curve[-1][1]:.4f}, "
                  f"{time.perf_counter() - t:.0f} s; curve {[(s, round(a, 3)) for s, a in curve]}", flush=True)

    print(f"\n{args.encoder} @ {args.image_size}px, {args.steps} steps, seeds {args.seeds}, "
          f"val acc every {args.every} steps, {time.perf_counter() - t0:.0f} s total\n")
    print("| schedule | test acc (mean ± std) | final val acc (mean) | steps to constant-LR final val acc, "
          "per seed | median | fraction of budget |")
    print("|---|---|---|---|---|---|")
    for name in curves:
        reach = [first_reach(curves[name][s], curves["constant"][s][-1][1]) for s in args.seeds]
        done = [r for r in reach if r is not None]
        median = statistics.median(done) if len(done) == len(reach) else None
        med = "not reached" if median is None else f"{median:g}"
        frac = "—" if median is None else f"{median / args.steps:.2f}"
        acc = tests[name]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        val = statistics.mean(curves[name][s][-1][1] for s in args.seeds)
        per_seed = ", ".join("—" if r is None else str(r) for r in reach)
        print(f"| {name} | {statistics.mean(acc):.4f} ± {std:.4f} | {val:.4f} | {per_seed} | {med} | {frac} |")


if __name__ == "__main__":
    main()
