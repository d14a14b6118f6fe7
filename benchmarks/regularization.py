"""Few-shot digits: no regularization vs cutout, MixUp, CutMix, label smoothing, an augmentation preset, all together.

Same model, optimizer, step budget and few-shot images for every variant of a seed; only the
regularizer differs. The seed picks the few-shot images (``samples_per_class`` per class from the
train split), the initial head and the data order, so seed-to-seed spread includes which images were
drawn. Variants of one seed run back to back (none, cutout, ..., combination), so machine load hits
them alike. Test accuracy of the final weights (no early stopping, no checkpoint selection) on the
360-image test split, mean +- sample std over seeds.

No weight decay anywhere (so ``none`` really is none); the combination is the ``standard`` preset +
cutout + MixUp/CutMix (switch 0.5) + label smoothing 0.1.

Default model: timm's tiny ``test_resnet`` from scratch at 16 px, 40 epochs of 4 steps (~25 s a run
on one busy core, 21 runs in ~10 min). ``--encoder resnet10t --image-size 32 --pretrained`` starts from
the MNIST-5k encoder instead (about 8x slower per step).

    python benchmarks/regularization.py                   # 3 seeds x 7 variants, 10 per class
    python benchmarks/regularization.py --seeds 0 1 2 3 4 --samples-per-class 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from lightkit.callbacks.mixing import MixUpCutMix  # noqa: E402
from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.models import ImageClassifier  # noqa: E402

WEIGHTS = str(Path(__file__).resolve().parents[1] / "lightkit/assets/mnist5k_resnet10t.safetensors")
CUTOUT = {"name": "cutout", "p": 0.5}

# variant -> (augmentations, module label smoothing, MixUpCutMix kwargs or None)
VARIANTS: dict[str, tuple[Any, float, dict[str, float] | None]] = {
    "none": (None, 0.0, None),
    "cutout": ([CUTOUT], 0.0, None),
    "mixup": (None, 0.0, {"mixup_alpha": 0.2}),
    "cutmix": (None, 0.0, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}),
    "label_smoothing": (None, 0.1, None),
    "preset_standard": ("standard", 0.0, None),
    "combination": ([{"name": "standard"}, CUTOUT], 0.0,
                    {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "switch_prob": 0.5, "label_smoothing": 0.1}),
}


def run(variant: str, seed: int, args: argparse.Namespace) -> tuple[float, float]:
    augmentations, smoothing, mixing = VARIANTS[variant]
    seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=args.batch_size, image_size=args.image_size, seed=seed,
                          samples_per_class=args.samples_per_class, augmentations=augmentations)
    model = ImageClassifier(
        encoder=args.encoder, num_classes=10, in_chans=1, pretrained=WEIGHTS if args.pretrained else False,
        label_smoothing=smoothing, optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=args.lr, pct_start=0.25),
    )
    callbacks: list[Callback] = [MixUpCutMix(**mixing, seed=seed)] if mixing else []
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    return float(acc), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--encoder", default="test_resnet", help="timm model; resnet10t with --pretrained")
    parser.add_argument("--pretrained", action="store_true", help="start from the MNIST-5k encoder")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"load average before: {os.getloadavg()}; threads {args.threads}; {vars(args)}")
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    total = time.perf_counter()
    for seed in args.seeds:
        for variant in args.variants:
            acc, seconds = run(variant, seed, args)
            results[variant].append(acc)
            print(f"seed {seed}  {variant:<16} test acc {100 * acc:6.2f} %  fit {seconds:5.1f} s", flush=True)
    base = statistics.fmean(results["none"]) if "none" in results else None
    print("\n| variant | test acc mean +- std (%) | per seed (%) | vs none (pp) |\n|---|---:|---|---:|")
    for variant, accs in results.items():
        mean = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        delta = f"{100 * (mean - base):+.2f}" if base is not None else "n/a"
        seeds = " / ".join(f"{100 * a:.2f}" for a in accs)
        print(f"| {variant} | {100 * mean:.2f} +- {100 * std:.2f} | {seeds} | {delta} |")
    print(f"\nwall {time.perf_counter() - total:.0f} s; load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
