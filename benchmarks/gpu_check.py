"""GPU throughput check (issue 12): resnet50 fine-tuning at 224 px, img/s, lightkit vs a plain loop.

Eight arms, each a fresh model: {plain loop, lightkit ``Trainer.fit``} x {fp32, bf16-mixed} x
{contiguous, channels_last}, plus ``--compile`` arms (torch.compile, bf16 + channels_last). Every arm
trains ``--warmup`` steps, then times ``--steps`` optimizer steps (CUDA synchronised at both ends) on
the same in-memory batches of random images (the data path is measured by loader_throughput.py;
here the GPU is the subject). ``pretrained=False``: the GPU machine has no network; the weights do
not change the speed.

- plain: forward, cross-entropy, backward, AdamW step; ``torch.autocast(dtype=bfloat16)`` for bf16;
  model and inputs in ``channels_last`` for that arm.
- lightkit: ``ImageClassifier`` + ``Trainer(precision="bf16-mixed" | "32-true")`` + ``SpeedUp`` (the
  ``configs/gpu.yaml`` recipe), its train metrics and loss logging on, no logger / checkpoint / bar.

Without CUDA, or with ``--dry-run``, the same code runs on the CPU at tiny sizes (timm ``test_resnet``,
32 px, batch 4, 2 steps) so CI can check it; its figures mean nothing.

    bash benchmarks/gpu_check.sh                  # on one GPU: ~3-5 min
    bash benchmarks/gpu_check.sh --compile        # + torch.compile arms (compilation adds ~1-2 min)
    bash benchmarks/gpu_check.sh --dry-run        # CPU, tiny: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from contextlib import nullcontext
from functools import partial
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lightkit.callbacks.speed import SpeedUp  # noqa: E402
from lightkit.models.classifier import ImageClassifier  # noqa: E402


class RepeatedBatches(Dataset):
    """``length`` samples cycling over a few fixed random images (batches are made by the loader)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, length: int) -> None:
        self.images, self.labels, self.length = images, labels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i % len(self.images)], self.labels[i % len(self.labels)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Wall time of the optimizer steps after ``warmup`` (synchronised)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.t0 = self.t1 = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            _sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        _sync(self.device)
        self.t1 = time.perf_counter()


def _model(args: argparse.Namespace) -> ImageClassifier:
    seed_everything(0, verbose=False)
    return ImageClassifier(encoder=args.model, num_classes=args.num_classes, pretrained=False,
                           optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.05))


def plain_arm(args: argparse.Namespace, loader: DataLoader, device: torch.device, bf16: bool, channels_last: bool,
              compile: bool) -> float:
    """img/s of a hand-written loop."""
    model = _model(args).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    model.train()
    t0, seen = 0.0, 0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def lightkit_arm(args: argparse.Namespace, loader: DataLoader, device: torch.device, bf16: bool, channels_last: bool,
                 compile: bool) -> float:
    """img/s of ``Trainer.fit`` with the configs/gpu.yaml recipe."""
    model = _model(args)
    timer = StepTimer(args.warmup, device)
    callbacks: list[Callback] = [timer]
    if channels_last or compile:
        callbacks.append(SpeedUp(channels_last=channels_last, compile=compile))
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(accelerator=device.type, devices=1, precision="bf16-mixed" if bf16 else "32-true",
                          max_steps=args.warmup + args.steps, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                          default_root_dir=root, callbacks=callbacks)
        trainer.fit(model, loader)
    return args.steps * args.batch_size / (timer.t1 - timer.t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=1, help="repetitions of every arm, alternating; medians reported")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile arms (bf16, channels_last)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (automatic without CUDA)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:
        args.model, args.image_size, args.batch_size, args.warmup, args.steps = "test_resnet", 32, 4, 1, 2
        args.num_classes = min(args.num_classes, 10)
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4 * args.batch_size, 3, args.image_size, args.image_size, generator=g)
    labels = torch.randint(0, args.num_classes, (len(images),), generator=g)
    dataset = RepeatedBatches(images, labels, (args.warmup + args.steps) * args.batch_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=0 if dry else 4, pin_memory=not dry,
                        persistent_workers=not dry, drop_last=True)
    arms = [(runner, bf16, cl, False) for bf16 in (False, True) for cl in (False, True)
            for runner in ("plain", "lightkit")]
    if args.compile:
        arms += [("plain", True, True, True), ("lightkit", True, True, True)]
    figures: dict[str, list[float]] = {}
    for rep in range(args.reps):
        for runner, bf16, cl, comp in (arms if rep % 2 == 0 else arms[::-1]):
            key = (f"{runner:8s} {'bf16' if bf16 else 'fp32'} {'channels_last' if cl else 'contiguous   '}"
                   f"{' compiled' if comp else ''}")
            fn = plain_arm if runner == "plain" else lightkit_arm
            figures.setdefault(key, []).append(fn(args, loader, device, bf16, cl, comp))
            print(f"rep {rep} {key}: {figures[key][-1]:.1f} img/s", flush=True)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "CPU (dry run: sizes too small to mean anything)")
    print(f"\n{args.model} {args.image_size} px, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}, {args.reps} rep(s), {name}, torch {torch.__version__}")
    print(f"{'arm':40s} {'img/s':>10s} {'lightkit/plain':>15s}")
    medians = {k: statistics.median(v) for k, v in figures.items()}
    for key, value in medians.items():
        plain_key = key.replace("lightkit", "plain   ")
        ratio = f"{value / medians[plain_key]:.3f}" if key.startswith("lightkit") else ""
        print(f"{key:40s} {value:10.1f} {ratio:>15s}")
    result = {"device": name, "dry_run": dry, "model": args.model, "image_size": args.image_size,
              "batch_size": args.batch_size, "steps": args.steps, "img_per_s": medians}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
