"""Fine-tuning strategies on few-shot digits (issue 4, point 5): scratch, linear probe, full fine-tune,
fastai's freeze_unfreeze with discriminative LRs, and ULMFiT-style gradual unfreezing.

Same model (resnet10t, 32 px, 1 channel, linear head), data (10 labelled images per class = 100 training
images), optimizer (AdamW, wd 0.05, label smoothing 0.1) and step budget (--epochs x 4 batches) in every
arm; only the initial encoder, the freezing and the per-group LRs differ. Arms run interleaved within each
seed so machine load hits all alike. Validation is skipped (no checkpoint selection, no early stopping):
the test accuracy is that of the final weights.

Arms (``lr`` = --lr, 1e-3 by default; ``OneCycle`` = lightkit.lr_schedulers.OneCycle over the whole fit):
  scratch          pretrained=False, FineTune(no_freeze), uniform lr, OneCycle(pct_start=0.25)
  linear_probe     FineTune(freeze): encoder frozen (BN in eval), head at lr, OneCycle(pct_start=0.25)
  full_finetune    FineTune(no_freeze), uniform lr, OneCycle(pct_start=0.25)
  freeze_unfreeze  configs/finetune_fastai.yaml's FineTune: head alone for --unfreeze-at epochs with a one-cycle
                   at 2e-3 (pct_start 0.99, div 25), then a new one-cycle (pct_start 0.4, div 5) over the
                   remaining steps with lr_range [1e-5, 1e-3] (stem -> head, geometric)
  gradual          FineTune(gradual, unfreeze_at=--gradual-every epochs): one more group from the head down at
                   each milestone, lr_range [1e-5, 1e-3], OneCycle(pct_start=0.25) over the whole fit

    python benchmarks/finetune.py                    # 3 seeds, 5 arms, 20 epochs (80 steps) each
    python benchmarks/finetune.py --seeds 0 --epochs 2 --arms full_finetune gradual   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lightkit.callbacks.finetune import FineTune, PhaseSchedule  # noqa: E402
from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.lr_schedulers import OneCycle  # noqa: E402
from lightkit.models import ImageClassifier  # noqa: E402

WEIGHTS = str(Path(__file__).resolve().parents[1] / "lightkit/assets/mnist5k_resnet10t.safetensors")
ARMS = ["scratch", "linear_probe", "full_finetune", "freeze_unfreeze", "gradual"]
REFERENCE = "full_finetune"
LR_RANGE = [1e-5, 1e-3]  # configs/finetune_fastai.yaml


def make_callback(arm: str, args: argparse.Namespace) -> FineTune:
    if arm in ("scratch", "full_finetune"):
        return FineTune(strategy="no_freeze")
    if arm == "linear_probe":
        return FineTune(strategy="freeze", train_bn=False)
    if arm == "freeze_unfreeze":
        return FineTune(
            strategy="freeze_unfreeze", unfreeze_at=args.unfreeze_at, unit="epoch", train_bn=False, lr_range=LR_RANGE,
            schedule=[PhaseSchedule(shape="one_cycle", lr_scale=2.0, pct_start=0.99, div_factor=25.0),
                      PhaseSchedule(shape="one_cycle", lr_scale=1.0, pct_start=0.4, div_factor=5.0)],
        )
    if arm == "gradual":
        return FineTune(strategy="gradual", unfreeze_at=args.gradual_every, unit="epoch", train_bn=False,
                        lr_range=LR_RANGE)
    raise ValueError(arm)


def run(arm: str, seed: int, args: argparse.Namespace) -> tuple[float, float, list[str]]:
    seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=args.batch_size, image_size=32, seed=seed,
                          samples_per_class=args.samples_per_class)
    # freeze_unfreeze: FineTune's per-phase schedule owns the LR, so the module has no scheduler.
    sched = None if arm == "freeze_unfreeze" else partial(OneCycle, pct_start=0.25, cycle_momentum=False)
    model = ImageClassifier(
        encoder="resnet10t", num_classes=10, in_chans=1, pretrained=False if arm == "scratch" else WEIGHTS,
        label_smoothing=0.1, optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.05),
        lr_scheduler=sched,
    )
    ft = make_callback(arm, args)
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=[ft])
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    trained = ft.trainable()  # groups training at the end
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    return float(acc), seconds, trained


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--unfreeze-at", type=int, default=4, help="freeze_unfreeze: epochs with the encoder frozen")
    parser.add_argument("--gradual-every", type=int, default=3, help="gradual: epochs between unfreezes")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"start: {uptime()}", flush=True)
    print(f"args: {vars(args)}", flush=True)
    results: dict[str, dict[int, tuple[float, float]]] = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            acc, sec, trained = run(arm, seed, args)
            results[arm][seed] = (acc, sec)
            print(f"{arm:15s} seed={seed} test_acc={acc:.4f} fit_s={sec:.1f} training_at_end={trained}", flush=True)
    print(f"\nend: {uptime()}")
    print("\n| arm | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean +- std | "
          f"paired diff vs {REFERENCE} (mean +- std) | fit s (median) |")
    print("|---|" + "---:|" * (len(args.seeds) + 3))
    for arm in args.arms:
        accs = [100 * results[arm][s][0] for s in args.seeds]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells = " | ".join(f"{a:.2f}" for a in accs)
        if REFERENCE in results and arm != REFERENCE:
            diffs = [a - 100 * results[REFERENCE][s][0] for a, s in zip(accs, args.seeds, strict=True)]
            dstd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            diff = f"{statistics.mean(diffs):+.2f} +- {dstd:.2f} ({', '.join(f'{d:+.2f}' for d in diffs)})"
        else:
            diff = "-"
        med = statistics.median(results[arm][s][1] for s in args.seeds)
        print(f"| {arm} | {cells} | {statistics.mean(accs):.2f} +- {std:.2f} % | {diff} | {med:.0f} |")


if __name__ == "__main__":
    main()
