"""Transfer (MNIST-5k-pretrained encoder) vs from scratch on sklearn's digits, full and few-shot.

Same model (resnet10t, 32 px, 1 channel), optimizer, schedule and step budget on both sides; only the
initial encoder weights differ. Runs are interleaved (transfer, scratch, transfer, ...) so machine load
hits both alike. Prints per-run test accuracy and time, then mean +- std and the difference.

    python benchmarks/transfer.py                     # 3 seeds, full + 10 labels per class
    python benchmarks/transfer.py --seeds 0 --settings full
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.models import ImageClassifier  # noqa: E402

WEIGHTS = str(Path(__file__).resolve().parents[1] / "lightkit/assets/mnist5k_resnet10t.safetensors")
# setting -> (samples_per_class, epochs): the few-shot set is 100 images, so more epochs for a similar step count.
SETTINGS = {"full": (None, 5), "fewshot10": (10, 30)}


def run(pretrained: bool, seed: int, samples_per_class: int | None, epochs: int, lr: float) -> tuple[float, float]:
    seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=64, image_size=32, seed=seed, samples_per_class=samples_per_class)
    model = ImageClassifier(
        encoder="resnet10t", num_classes=10, in_chans=1, pretrained=WEIGHTS if pretrained else False,
        label_smoothing=0.1, optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.05),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=lr, pct_start=0.25),
    )
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    return float(acc), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for setting in args.settings:
        spc, epochs = SETTINGS[setting]
        for seed in args.seeds:
            for init in ("transfer", "scratch"):
                acc, sec = run(init == "transfer", seed, spc, epochs, args.lr)
                results.setdefault((setting, init), []).append((acc, sec))
                print(f"{setting:10s} {init:9s} seed={seed} test_acc={acc:.4f} fit_s={sec:.1f}", flush=True)
    print("\nsetting    init      test acc (mean +- std over seeds)   fit s (median)")
    for setting in args.settings:
        for init in ("transfer", "scratch"):
            accs = [a for a, _ in results[(setting, init)]]
            secs = [s for _, s in results[(setting, init)]]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"{setting:10s} {init:9s} {100 * statistics.mean(accs):6.2f} +- {100 * std:4.2f} %"
                  f"                 {statistics.median(secs):6.1f}")
        gain = statistics.mean(a for a, _ in results[(setting, "transfer")]) - statistics.mean(
            a for a, _ in results[(setting, "scratch")])
        print(f"{setting:10s} transfer - scratch: {100 * gain:+.2f} points")


if __name__ == "__main__":
    main()
