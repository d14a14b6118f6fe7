"""lightkit from Python, without the CLI: build an ImageClassifier and a data module, fit, test, predict.

The same pieces ``configs/quickstart.yaml`` wires together, as plain objects: the data module decides
``num_classes`` / ``in_chans`` / ``class_names`` (the CLI links them; here they are passed by hand),
the optimizer and scheduler are factories the model calls with its own parameter groups.

    python examples/python_api.py                 # the quickstart's transfer learning, ~1 min on 2 CPU cores
    python examples/python_api.py --fast          # a few steps (what the test runs)
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightkit.callbacks import Diagnose
from lightkit.callbacks.prediction_writer import PredictionWriter
from lightkit.data import DigitsDataModule
from lightkit.models import ImageClassifier


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example_api", help="folder for checkpoints and predictions")
    parser.add_argument("--fast", action="store_true", help="random-init test_resnet, a few steps (for the test)")
    args = parser.parse_args(argv)
    seed_everything(0)
    out = Path(args.out).resolve()
    data = DigitsDataModule(batch_size=64, image_size=32)
    model = ImageClassifier(
        encoder="test_resnet" if args.fast else "resnet10t",
        pretrained=False if args.fast else "lightkit:mnist5k_resnet10t",
        num_classes=data.num_classes, in_chans=data.in_chans, class_names=data.class_names,
        label_smoothing=0.1,
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3, pct_start=0.25),
    )
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val/loss", mode="min", filename="best")
    trainer = Trainer(max_epochs=1 if args.fast else 5, accelerator="cpu", default_root_dir=out, logger=False,
                      callbacks=[checkpoint, Diagnose()], enable_progress_bar=False,
                      limit_train_batches=8 if args.fast else None, limit_val_batches=1 if args.fast else None,
                      limit_test_batches=2 if args.fast else None)
    trainer.fit(model, datamodule=data)
    (results,) = trainer.test(model, datamodule=data, ckpt_path=checkpoint.best_model_path, verbose=False)
    predictor = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=out,
                        callbacks=[PredictionWriter(output=str(out / "predictions.csv"))],
                        limit_predict_batches=2 if args.fast else None)
    predictor.predict(model, datamodule=data, ckpt_path=checkpoint.best_model_path)
    print(f"test/acc {results['test/acc']:.4f}; best checkpoint {checkpoint.best_model_path}; "
          f"predictions {out / 'predictions.csv'}")
    return {k: float(v) for k, v in results.items()}


if __name__ == "__main__":
    main()
