"""A tiny fit over a streamed image folder that records every training sample it sees (a subprocess).

    python tests/data/stream_fit.py ROOT OUT.jsonl [--ckpt CKPT] [--kill_at STEP] [--save_every N] [--devices 2]
        [--shards] [--augment] [--workers N]

Each line of ``OUT.<rank>`` is one training batch of that rank: ``{"rank", "epoch", "step", "ids"}``, where an id
is the image's pixel sum (the test writes images whose sums differ). ``--kill_at`` SIGKILLs the
process after that optimizer step (a crash, no cleanup); checkpoints go to ``ROOT/../ckpt``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.data import ImageFolderDataModule, ShardDataModule


class Recorder(LightningModule):
    def __init__(self, out: str, in_features: int) -> None:
        super().__init__()
        self.out = out
        self.layer = torch.nn.Linear(in_features, 3)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        ids = torch.round(x.flatten(1).double().sum(1) * 1000).long().tolist()
        with open(f"{self.out}.{self.global_rank}", "a") as f:
            f.write(json.dumps({"rank": self.global_rank, "epoch": self.current_epoch, "step": self.global_step,
                                "ids": ids}) + "\n")
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--kill_at", type=int, default=None)
    parser.add_argument("--save_every", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--shards", action="store_true", help="ROOT is a folder written by prepare")
    args = parser.parse_args()
    augmentations = "light" if args.augment else None
    if args.shards:
        dm = ShardDataModule(args.root, batch_size=4, image_size=12, seed=3, num_workers=args.workers,
                             augmentations=augmentations)
    else:
        dm = ImageFolderDataModule(args.root, batch_size=4, image_size=12, channels=3, seed=3, in_memory=False,
                                   num_workers=args.workers, val_fraction=0.0, test_fraction=0.0,
                                   augmentations=augmentations)
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=str(Path(args.root).parent / "ckpt"), save_top_k=-1,
                                                 every_n_train_steps=args.save_every)]
    if args.kill_at is not None:
        callbacks.append(KillAt(args.kill_at))
    trainer = Trainer(max_epochs=2, accelerator="cpu", devices=args.devices,
                      strategy="ddp" if args.devices > 1 else "auto", logger=False, callbacks=callbacks,
                      limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Recorder(args.out, 3 * 12 * 12), datamodule=dm, ckpt_path=args.ckpt)


if __name__ == "__main__":
    main()
