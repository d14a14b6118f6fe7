"""Overhead of lightkit's fit path over a plain PyTorch loop (issue 12; goal: ratio <= 1.03).

Both arms train the same timm model (``ImageClassifier``: timm encoder + linear head, the same seed,
so the same initial weights) on the same batches (the data module's own train / val loaders, built
once per run, seeded shuffling) with the same optimizer (AdamW over the same parameter groups) and
the same per-step OneCycleLR, for the same number of epochs, validating after each epoch.

- ``plain``: a hand-written loop: forward, cross-entropy, backward, step, scheduler step, a running
  loss kept on the device; validation computes loss and accuracy under ``torch.no_grad``.
- ``lightkit``: ``lightkit.cli.main(["fit", "--config", <yaml>])``, the quickstart setup: W&B
  (offline) and CSV loggers, ``ModelCheckpoint(monitor=val/acc)``, ``LearningRateMonitor(step)``,
  the progress bar and model summary on (the defaults), train / val metrics (accuracy, top-5, F1),
  ``test_after_fit: false`` (the plain loop does not test), plus a ``LoopTimer`` callback (this
  file, imported by class path) that measures the loop.

Figures per run: ``loop`` = from the start of the first training epoch to the end of training
(validation included, sanity check excluded); ``total`` = the whole call (parsing, model creation,
data setup, logger start-up, sanity check, checkpoint writing). Runs alternate (plain, lightkit, then
lightkit, plain) so that load drift on a shared machine hits both arms equally; medians are reported
with the load average. The final weights of the two arms are compared as a check that both did the
same work.

    python benchmarks/overhead.py                        # resnet18, MNIST-5k at 32 px, 1 epoch, 3 reps, 2 threads
    python benchmarks/overhead.py --data digits --epochs 3 --reps 5
    python benchmarks/overhead.py --profile 30           # also: cProfile of 30 lightkit steps, top entries
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the CLI imports overhead.LoopTimer by class path
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch import Callback, seed_everything  # noqa: E402

from lightkit.cli import main as cli_main  # noqa: E402
from lightkit.data import DigitsDataModule, MNIST5kDataModule  # noqa: E402
from lightkit.models.classifier import ImageClassifier, build_param_groups  # noqa: E402

DATA = {"digits": DigitsDataModule, "mnist5k": MNIST5kDataModule}
LR, WD, PCT = 1e-3, 0.05, 0.25


def _data(name: str, batch_size: int, image_size: int) -> Any:
    # mean / std given: otherwise the CLI's data module takes them from the attached model's timm config
    return DATA[name](batch_size=batch_size, image_size=image_size, mean=[0.5], std=[0.5])


def _setup(dm: Any, model: torch.nn.Module) -> None:
    """Set ``dm`` up as the CLI's arm does: the resize interpolation comes from the model's timm
    config, which the data module reads from the model the trainer holds."""
    dm.trainer = SimpleNamespace(lightning_module=model)
    dm.setup("fit")


def plain_run(model_name: str, data: str, batch_size: int, image_size: int, epochs: int) -> dict[str, Any]:
    """One plain-loop run; ``{"loop": s, "total": s, "state": final weights, "val_acc": ...}``."""
    t0 = time.perf_counter()
    seed_everything(0, verbose=False)
    dm = _data(data, batch_size, image_size)
    model = ImageClassifier(encoder=model_name, num_classes=dm.num_classes, in_chans=dm.in_chans)
    _setup(dm, model)
    optimizer = torch.optim.AdamW(build_param_groups(model.layer_groups()), lr=LR, weight_decay=WD)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, pct_start=PCT,
                                                    total_steps=epochs * len(train))
    t1 = time.perf_counter()
    val_acc = 0.0
    for _ in range(epochs):
        model.train()
        running = torch.zeros(())
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.detach()
        model.eval()
        correct, seen, val_loss = torch.zeros(()), 0, torch.zeros(())
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                val_loss += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
        val_acc = float(correct) / seen
        print(f"    plain epoch: train loss {float(running) / len(train):.4f}  val acc {val_acc:.4f}", flush=True)
    t2 = time.perf_counter()
    return {"loop": t2 - t1, "total": t2 - t0, "state": _float_state(model), "val_acc": val_acc}


def lightkit_config(model_name: str, data: str, batch_size: int, image_size: int, epochs: int,
                    root: str) -> dict[str, Any]:
    """The quickstart recipe with the benchmark's model, data and schedule."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": epochs, "default_root_dir": root,
            "logger": [
                {"class_path": "lightkit.loggers.WandbLogger",
                 "init_args": {"project": "lightkit", "name": "overhead", "save_dir": root}},
                {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": root}},
            ],
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"monitor": "val/acc", "mode": "max"}},
                {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                 "init_args": {"logging_interval": "step"}},
                {"class_path": "overhead.LoopTimer"},  # this file, imported by the CLI
            ],
        },
        "model": {"class_path": "lightkit.models.ImageClassifier", "init_args": {
            "encoder": model_name, "pretrained": False,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": LR, "weight_decay": WD}},
            "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.OneCycleLR",
                             "init_args": {"max_lr": LR, "pct_start": PCT}},
        }},
        "data": {"class_path": f"lightkit.data.{DATA[data].__name__}",
                 "init_args": {"batch_size": batch_size, "image_size": image_size, "mean": [0.5], "std": [0.5]}},
        "test_after_fit": False,
    }


def lightkit_run(model_name: str, data: str, batch_size: int, image_size: int, epochs: int,
                 profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """One ``python cli.py fit --config ...`` run, in this process."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "overhead.yaml"
        path.write_text(yaml.safe_dump(lightkit_config(model_name, data, batch_size, image_size, epochs, root)))
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        cli = cli_main(["fit", "--config", str(path)])
        if profile is not None:
            profile.disable()
        total = time.perf_counter() - t0
        timer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "LoopTimer")
        val_acc = float(cli.trainer.callback_metrics.get("val/acc", float("nan")))
        return {"loop": timer.t1 - timer.t0, "total": total, "state": _float_state(cli.model), "val_acc": val_acc}


class LoopTimer(Callback):
    """Seconds from the start of training to its end (validation included, sanity check excluded).

    Lightning's ``Timer`` does the same but its ``Interval`` enum default cannot be written to YAML.
    """

    def __init__(self) -> None:
        self.t0 = self.t1 = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.t1 = time.perf_counter()


def _float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data", choices=sorted(DATA), default="mnist5k")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after the timed runs, cProfile a lightkit run of this many steps and print the "
                             "top entries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    common = (args.model, args.data, args.batch_size, args.image_size)
    print(f"load average before: {os.getloadavg()}", flush=True)
    # Warm-up: imports (wandb, matplotlib), allocator, the data set's file cache.
    if args.data == "digits":
        plain_run(*common, 1)
    else:
        dm = _data(args.data, args.batch_size, args.image_size)
        _setup(dm, ImageClassifier(encoder=args.model, num_classes=dm.num_classes, in_chans=dm.in_chans))
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "lightkit": []}
    for rep in range(args.reps):
        for arm in (("plain", "lightkit") if rep % 2 == 0 else ("lightkit", "plain")):
            result = (plain_run if arm == "plain" else lightkit_run)(*common, args.epochs)
            runs[arm].append(result)
            print(f"rep {rep} {arm:>8}: loop {result['loop']:.2f} s  total {result['total']:.2f} s  "
                  f"val acc {result['val_acc']:.4f}", flush=True)
    diff = _max_diff(runs["plain"][0]["state"], runs["lightkit"][0]["state"])
    print(f"\n{args.model}, {args.data} at {args.image_size} px, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"{args.reps} reps, {args.threads} threads, torch {torch.__version__}; load average after: {os.getloadavg()}")
    print(f"final weights, plain vs lightkit: max abs diff {diff:.2e}")
    for key in ("loop", "total"):
        plain = statistics.median(r[key] for r in runs["plain"])
        light = statistics.median(r[key] for r in runs["lightkit"])
        ratios = ", ".join(f"{b[key] / a[key]:.3f}" for a, b in zip(runs["plain"], runs["lightkit"], strict=True))
        print(f"{key:>5}: plain {plain:.2f} s  lightkit {light:.2f} s  ratio {light / plain:.3f} "
              f"(per-rep ratios {ratios})")
    if args.profile:
        profile = cProfile.Profile()
        steps = args.profile
        batches = len(_data(args.data, args.batch_size, args.image_size).train_dataloader())
        lightkit_run(*common, max(1, -(-steps // batches)), profile=profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
