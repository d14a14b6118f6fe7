"""The large-batch rule on CPU (issue 19, part 1): does linear LR scaling + warmup (Goyal et al. 2017,
arXiv:1706.02677) recover the small-batch accuracy when the batch grows 8x?

timm's ``test_resnet`` (0.37 M parameters, 4x cheaper than resnet10t on CPU; ``--encoder resnet10t``
for the packaged encoder's architecture) from scratch (no pretrained weights: a pretrained encoder reaches
~99 % in any arm), 32 px, 1 channel, on scikit-learn's digits (lightkit.data.DigitsDataModule, seeded 70/10/20
split), SGD with momentum 0.9 (Goyal's optimizer), weight decay 5e-4, a cosine decay to 0 over the fit
(lightkit.lr_schedulers.Cosine).
The large batch is simulated with gradient accumulation: loader batch B = 32 (BatchNorm statistics per
32, as in Goyal's per-GPU batches) x 8 accumulated = 256 per optimizer step. Same number of epochs in
every arm, so the large-batch arms take 8x fewer optimizer steps. No validation during the fit; the test
accuracy is that of the final weights. Arms run interleaved within each seed.

Arms (``lr`` = --lr at the reference batch 32):
  small            B = 32, lr
  large            B = 256 (32 x 8 accumulated), lr unchanged
  large_linear     B = 256, LRScaling(linear, reference_batch=32, warmup=0): lr x 8
  large_warmup     B = 256, LRScaling(linear, reference_batch=32, warmup=--warmup): lr x 8 after a linear
                   ramp from lr (Goyal's gradual warmup)

    nice -n 5 python benchmarks/large_batch.py                # 3 seeds x 4 arms, 8 epochs
    python benchmarks/large_batch.py --seeds 0 --epochs 1     # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from functools import partial

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from lightkit.callbacks import LRScaling  # noqa: E402
from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.lr_schedulers import Cosine  # noqa: E402
from lightkit.models import ImageClassifier  # noqa: E402

ARMS = ["small", "large", "large_linear", "large_warmup"]
REFERENCE = "small"


class FirstLoss(Callback):
    """Training loss of the first and last optimizer steps: did the fit diverge early?"""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        self.losses.append(loss * trainer.accumulate_grad_batches)  # Lightning divides it by the accumulation


def run(arm: str, seed: int, args: argparse.Namespace) -> tuple[float, float, int, float]:
    seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=args.batch_size, image_size=32, seed=seed)
    model = ImageClassifier(
        encoder=args.encoder, num_classes=10, in_chans=1, pretrained=False,
        optimizer=partial(torch.optim.SGD, lr=args.lr, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=partial(Cosine),
    )
    callbacks: list[Callback] = [FirstLoss()]
    if arm == "large_linear":
        callbacks.insert(0, LRScaling(rule="linear", reference_batch=args.batch_size, warmup=0))
    elif arm == "large_warmup":
        warmup = args.warmup if args.warmup.endswith("ep") else float(args.warmup)
        callbacks.insert(0, LRScaling(rule="linear", reference_batch=args.batch_size, warmup=warmup))
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, accumulate_grad_batches=1 if arm == "small" else args.k,
                      callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    early = max(callbacks[-1].losses[: max(1, len(callbacks[-1].losses) // 10)])
    return float(acc), seconds, trainer.global_step, early


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="reference batch B (loader batch in every arm)")
    parser.add_argument("--k", type=int, default=8, help="accumulated batches of the large arms (batch k x B)")
    parser.add_argument("--lr", type=float, default=0.025, help="SGD LR at the reference batch")
    parser.add_argument("--warmup", default="2ep", help="large_warmup's LRScaling warmup ('<n>ep' or a fraction)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder", default="test_resnet", help="timm model name, trained from scratch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"start: {uptime()}", flush=True)
    print(f"args: {vars(args)}, torch {torch.__version__}", flush=True)
    results: dict[str, dict[int, tuple[float, float, int, float]]] = {arm: {} for arm in args.arms}
    t_all = time.perf_counter()
    for seed in args.seeds:
        for arm in args.arms:
            res = results[arm][seed] = run(arm, seed, args)
            print(f"{arm:13s} seed={seed} test_acc={res[0]:.4f} fit_s={res[1]:.1f} steps={res[2]} "
                  f"max_loss_first_10pct={res[3]:.3f}", flush=True)
    print(f"\nend: {uptime()}  total {time.perf_counter() - t_all:.0f} s")
    print("\n| arm | global batch | optimizer steps | " + " | ".join(f"seed {s}" for s in args.seeds)
          + f" | mean +- std | paired diff vs {REFERENCE} | fit s (median) |")
    print("|---|---:|---:|" + "---:|" * (len(args.seeds) + 3))
    for arm in args.arms:
        accs = [100 * results[arm][s][0] for s in args.seeds]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        if REFERENCE in results and arm != REFERENCE:
            diffs = [a - 100 * results[REFERENCE][s][0] for a, s in zip(accs, args.seeds, strict=True)]
            dstd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            diff = f"{statistics.mean(diffs):+.2f} +- {dstd:.2f}"
        else:
            diff = "-"
        batch = args.batch_size * (1 if arm == "small" else args.k)
        steps = results[arm][args.seeds[0]][2]
        med = statistics.median(results[arm][s][1] for s in args.seeds)
        print(f"| {arm} | {batch} | {steps} | " + " | ".join(f"{a:.2f}" for a in accs)
              + f" | {statistics.mean(accs):.2f} +- {std:.2f} % | {diff} | {med:.0f} |")


if __name__ == "__main__":
    main()
