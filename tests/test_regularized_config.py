"""``configs/regularized.yaml``: parses with every regularizer in place and runs a short fit that logs them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightkit.callbacks.mixing import MixUpCutMix
from lightkit.callbacks.regularization import RegularizationSummary
from lightkit.cli import main

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.max_epochs=2", "--trainer.max_steps=2",
         "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.slow
def test_short_fit_with_the_real_encoder(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    cli = main(["fit", "--config", str(REPO / "configs/regularized.yaml"), *SHORT,
                f"--trainer.default_root_dir={tmp_path}"])
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    assert model.hparams.encoder == "resnet10t" and model.hparams.pretrained.endswith("mnist5k_resnet10t")
    assert model.hparams.dropout == 0.2 and dm.samples_per_class == 20 and dm.split_sizes()["train"] == 200
    (mixer,) = [cb for cb in trainer.callbacks if isinstance(cb, MixUpCutMix)]
    (stop,) = [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]
    (best,) = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor]
    assert (mixer.mixup_alpha, mixer.cutmix_alpha, mixer.label_smoothing) == (0.2, 1.0, 0.1)
    assert (stop.monitor, stop.patience, best.monitor, best.mode) == ("val/loss", 10, "val/loss", "min")
    assert trainer.global_step == 2 and Path(best.best_model_path).is_file()
    assert "test/acc" in capsys.readouterr().out  # the run summary after the test of the best checkpoint
    (summary,) = [cb for cb in trainer.callbacks if isinstance(cb, RegularizationSummary)]
    assert all(summary.summary[k] for k in ("weight_decay", "dropout", "label_smoothing", "augmentation", "cutout",
                                            "mixup_cutmix", "early_stopping", "best_checkpoint"))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lightkit regularization:")]
    assert "augmentation [standard, cutout] (fill constant)" in line and line.endswith("off: L1, stochastic depth")
