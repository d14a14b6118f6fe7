"""lightkit's callbacks in your own Lightning project: a torchvision ResNet in a LightningModule lightkit did not write.

Nothing here uses lightkit's models, data modules or CLI. The module has its own attribute names
(``self.backbone``, ``self.classifier``) and its own ``configure_optimizers``; lightkit's callbacks
are added to an ordinary ``Trainer``:

* ``FineTune(groups=...)`` names the layer groups by module name (stem to head): the backbone is
  frozen for the first epoch, then unfrozen with discriminative LRs (fastai's ``fine_tune``);
* ``LRRangeTest(apply=True)`` sweeps the LR at fit start, writes the suggestion into the optimizer
  and restores everything it touched;
* ``MixUpCutMix`` mixes the training batches: ``y`` arrives as (N, C) soft targets, so accuracy is
  measured against ``MixUpCutMix.hard_labels(y)``;
* ``EMA`` validates with an exponential moving average of the weights;
* ``Diagnose``, ``GradientMonitor`` and ``LossCurves`` watch the run (the fixes are said in words:
  there is no lightkit config here; ``LossCurves`` is told this module's keys);
* ``SaveEncoder(attribute="backbone")`` writes the backbone's weights; ``PredictionWriter`` writes
  a CSV from the plain (N, C) tensor ``predict_step`` returns.

The data: sklearn's 1,797 real 8x8 digits, upscaled to 32 px, 3 channels. Run it:

    python examples/own_lightning_module.py --out runs/example_own      # ~1 min on 2 CPU cores
    python examples/own_lightning_module.py --fast                       # seconds (what the test runs)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule, Trainer, seed_everything
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks import EMA, Diagnose, FineTune, GradientMonitor, LossCurves, LRRangeTest, MixUpCutMix
from lightkit.callbacks.prediction_writer import PredictionWriter
from lightkit.callbacks.save_encoder import SaveEncoder


class DigitsNet(LightningModule):
    """A torchvision ResNet-18 (random init) with a linear classifier: your module, your names."""

    def __init__(self, num_classes: int = 10, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        resnet = torchvision.models.resnet18(weights=None)
        resnet.fc = nn.Identity()
        self.backbone = resnet
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)  # accepts hard labels and MixUpCutMix's soft targets alike
        acc = (logits.argmax(1) == MixUpCutMix.hard_labels(y)).float().mean()
        self.log_dict({"train_loss": loss, "train_acc": acc}, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        logits = self(batch[0])
        self.log_dict({"val_loss": F.cross_entropy(logits, batch[1]),
                       "val_acc": (logits.argmax(1) == batch[1]).float().mean()})

    def predict_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch[0]).softmax(dim=1)  # a plain (N, C) tensor: PredictionWriter takes it as it is

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One optimizer group per layer group, built once (FineTune only flips requires_grad and LRs).
        return torch.optim.AdamW([
            {"params": self.backbone.parameters(), "name": "backbone"},
            {"params": self.classifier.parameters(), "name": "classifier"},
        ], lr=self.hparams.lr, weight_decay=0.01)


def digits(n: int | None = None) -> tuple[TensorDataset, TensorDataset]:
    """sklearn's digits at 32 px, 3 channels, split 80/20 (first ``n`` images when given)."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:n].unsqueeze(1) / 16.0
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target)[:n]
    cut = int(0.8 * len(x))
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example_own", help="folder for checkpoints, plots and the CSV")
    parser.add_argument("--fast", action="store_true", help="a few steps on a few images (for the test)")
    args = parser.parse_args(argv)
    seed_everything(0)
    out = Path(args.out)
    train, val = digits(160 if args.fast else None)
    loader = DataLoader(train, batch_size=32, shuffle=True)
    val_loader = DataLoader(val, batch_size=64)
    groups = {"backbone": ["backbone"], "classifier": ["classifier"]}  # module names, stem to head
    callbacks = [
        LRRangeTest(apply=True, num_steps=8 if args.fast else 60),
        FineTune(strategy="freeze_unfreeze", unfreeze_at=1, groups=groups, lr_mults={"backbone": 0.1}),
        MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, num_classes=10),
        EMA(decay=0.99),
        Diagnose(every_n_steps=10, val_loss="val_loss"),
        GradientMonitor(every_n_steps=10, dirpath=str(out / "monitor")),
        LossCurves(val_loss="val_loss", val_acc="val_acc", train_acc="train_acc", dirpath=str(out / "monitor")),
        SaveEncoder(path=str(out / "backbone.safetensors"), attribute="backbone", use_best=False),
        PredictionWriter(output=str((out / "predictions.csv").resolve())),
    ]
    trainer = Trainer(max_epochs=2 if args.fast else 6, accelerator="cpu", default_root_dir=str(out), logger=False,
                      callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, limit_train_batches=3 if args.fast else None,
                      limit_val_batches=1 if args.fast else None)
    model = DigitsNet()
    trainer.fit(model, loader, val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.predict(model, val_loader)
    print(f"val_acc {metrics.get('val_acc', float('nan')):.3f}; wrote {out / 'backbone.safetensors'}, "
          f"{out / 'predictions.csv'} and {out / 'monitor'}")
    return metrics


if __name__ == "__main__":
    main()
