"""Multi-task learning from Python: digit (main) + parity + digit >= 5 + rotation angle on one encoder.

``MultiTaskClassifier`` with uncertainty weighting (Kendall et al. 2018) on
``DigitsMultiTaskDataModule``, the pieces of ``configs/multitask.yaml``; after the fit the auxiliary
heads are dropped and the main task predicts alone.

    python examples/multitask.py            # ~1 min on 2 CPU cores
    python examples/multitask.py --fast     # a few steps (what the test runs)
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

from lightkit.data.multitask import DigitsMultiTaskDataModule
from lightkit.models.multitask import MultiTaskClassifier, Task


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example_multitask", help="folder for the run")
    parser.add_argument("--fast", action="store_true", help="random-init test_resnet, a few steps (for the test)")
    args = parser.parse_args(argv)
    seed_everything(0)
    data = DigitsMultiTaskDataModule(batch_size=64, image_size=32)
    tasks = [Task(name="digit", type="multiclass", main=True), Task(name="parity", type="binary"),
             Task(name="ge5", type="binary"), Task(name="angle", type="regression", loss="mse", metrics=["mae"])]
    model = MultiTaskClassifier(
        tasks=tasks, encoder="test_resnet" if args.fast else "resnet10t",
        pretrained=False if args.fast else "lightkit:mnist5k_resnet10t",
        num_classes=data.num_classes, in_chans=data.in_chans, class_names=data.class_names,
        weighting="uncertainty", optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
    )
    trainer = Trainer(max_epochs=1 if args.fast else 5, accelerator="cpu", default_root_dir=Path(args.out).resolve(),
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      limit_train_batches=3 if args.fast else None, limit_val_batches=1 if args.fast else None,
                      limit_test_batches=1 if args.fast else None)
    trainer.fit(model, datamodule=data)
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    model.drop_auxiliary_heads()
    x = next(iter(data.test_dataloader()))[0][:4]
    print(f"test/acc {results['test/acc']:.4f}; main-task predictions of 4 test images: "
          f"{model(x).argmax(1).tolist()}")
    return {k: float(v) for k, v in results.items()}


if __name__ == "__main__":
    main()
