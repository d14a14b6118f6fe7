"""Does the data path keep up? Loader-only img/s vs train-step img/s (issue 12).

Loader rows iterate the data module's train loader for ``--epochs`` epochs and touch every batch
(no model): the lightkit loader (in-memory split read with one __getitems__ call per batch), the same split
through a default per-sample ``DataLoader`` (what it was before), and the augmented train split
(albumentations per sample) with 0 and ``--workers`` worker processes. The train row times forward,
backward and an AdamW step of the model on one fixed batch (no loading at all). A loader keeps up when
its img/s is well above the train row's (the ``x train`` column > 1).

    python benchmarks/loader_throughput.py                                 # MNIST-5k 32 px, resnet18, 2 threads
    python benchmarks/loader_throughput.py --data digits --augmentations standard --workers 2
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightkit.data import DigitsDataModule, MNIST5kDataModule
from lightkit.models.classifier import ImageClassifier

DATA = {"digits": DigitsDataModule, "mnist5k": MNIST5kDataModule}


def loader_rate(loader: DataLoader, epochs: int) -> float:
    """Images per second over ``epochs`` passes (after one untimed batch: workers start, caches fill)."""
    next(iter(loader))
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch[1])
    return seen / (time.perf_counter() - t0)


def train_rate(model_name: str, batch: list[torch.Tensor], num_classes: int, steps: int) -> float:
    """Images per second of forward + backward + AdamW step on one fixed batch."""
    x, y = batch[0], batch[1]
    model = ImageClassifier(encoder=model_name, num_classes=num_classes, in_chans=x.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps + 2):  # 2 warm-up steps
        if step == 2:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(y) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="mnist5k")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augmentations", default="light", help="preset for the augmented rows")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"load average before: {os.getloadavg()}", flush=True)
    cls = DATA[args.data]
    plain = cls(batch_size=args.batch_size, image_size=args.image_size)
    t0 = time.perf_counter()
    plain.setup("fit")
    setup_s = time.perf_counter() - t0
    rows: list[tuple[str, float]] = []
    fast = plain.train_dataloader()
    rows.append(("lightkit loader (one call per batch), 0 workers", loader_rate(fast, args.epochs)))
    per_sample = DataLoader(plain._datasets["train"], batch_size=args.batch_size, shuffle=True,  # noqa: SLF001
                            generator=torch.Generator().manual_seed(0))
    rows.append(("per-sample DataLoader (before), 0 workers", loader_rate(per_sample, args.epochs)))
    for workers in sorted({0, args.workers}):
        dm = cls(batch_size=args.batch_size, image_size=args.image_size, augmentations=args.augmentations,
                 num_workers=workers)
        dm.setup("fit")
        rows.append((f"augmented ({args.augmentations}), {workers} workers",
                     loader_rate(dm.train_dataloader(), args.epochs)))
    batch = next(iter(fast))
    train = train_rate(args.model, batch, plain.num_classes, args.steps)
    print(f"\n{args.data} at {args.image_size} px, batch {args.batch_size}, {args.threads} threads, "
          f"setup (decode + resize + normalise once) {setup_s:.2f} s; load average after: {os.getloadavg()}")
    print(f"{'path':48s} {'img/s':>10s} {'x train':>8s}")
    for name, rate in rows:
        print(f"{name:48s} {rate:10.0f} {rate / train:8.1f}")
    print(f"{'train step (' + args.model + ', fwd+bwd+AdamW)':48s} {train:10.0f} {1.0:8.1f}")


if __name__ == "__main__":
    main()
