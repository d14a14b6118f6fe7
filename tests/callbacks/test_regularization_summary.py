"""``RegularizationSummary``: the one log line at fit start names what is on, with strengths, and what is off."""

from __future__ import annotations

import logging
import pickle
from functools import partial
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightkit.callbacks.mixing import MixUpCutMix
from lightkit.callbacks.regularization import RegularizationSummary
from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier


def _fit(tmp_path: Any, model: ImageClassifier, dm: DigitsDataModule, callbacks: list) -> Trainer:
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                      accelerator="cpu", logger=False,
                      default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.fixture
def lightning_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    return caplog


def _line(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lightkit regularization:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_everything_on(tmp_path: Any, lightning_info: pytest.LogCaptureFixture) -> None:
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1, dropout=0.2, l1=1e-5,
                            label_smoothing=0.1, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    dm = DigitsDataModule(batch_size=8, image_size=16, samples_per_class=2, fill="reflect",
                          augmentations=[{"name": "light"}, {"name": "cutout"}])
    callbacks = [RegularizationSummary(), MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5),
                 EarlyStopping(monitor="val/loss", patience=7), ModelCheckpoint(monitor="val/loss")]
    with pytest.warns(UserWarning, match="both apply"):  # two label smoothings: MixUpCutMix says so
        callbacks[1].label_smoothing = 0.05
        _fit(tmp_path, model, dm, callbacks)
    line = _line(lightning_info)
    assert line.startswith("lightkit regularization: on: weight decay 0.05 (AdamW, "
                           "decoupled) (biases and norms exempt)")
    for part in ("L1 1e-05", "dropout 0.2 (1 layer: head.0)", "label smoothing 0.1 (loss), 0.05 (MixUpCutMix targets)",
                 "augmentation [light, cutout] (fill reflect)", "cutout (cutout)",
                 "mixup alpha 0.2 + cutmix alpha 1 on 50% of batches",
                 "early stopping on val/loss (min, patience 7 checks)", "best checkpoint by val/loss (min)"):
        assert part in line
    assert line.endswith("; off: stochastic depth")
    assert callbacks[0].summary["stochastic_depth"] is None


def test_nothing_on(tmp_path: Any, lightning_info: pytest.LogCaptureFixture) -> None:
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.SGD, lr=0.01))
    dm = DigitsDataModule(batch_size=8, image_size=16, samples_per_class=2)
    _fit(tmp_path, model, dm, [RegularizationSummary()])
    assert _line(lightning_info) == (
        "lightkit regularization: on: nothing; off: weight decay, L1, dropout, stochastic depth, label smoothing, "
        "augmentation, cutout, mixup/cutmix, early stopping, best checkpoint"
    )


def test_coupled_weight_decay_and_preset(tmp_path: Any, lightning_info: pytest.LogCaptureFixture) -> None:
    model = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.SGD, lr=0.01, weight_decay=5e-4))
    dm = DigitsDataModule(batch_size=8, image_size=16, samples_per_class=2, augmentations="standard")
    cb = RegularizationSummary()
    _fit(tmp_path, model, dm, [cb, ModelCheckpoint(monitor=None)])  # no monitor: last, not best
    line = _line(lightning_info)
    assert "weight decay 0.0005 (SGD, L2 in the gradient)" in line
    assert "augmentation preset standard (fill constant)" in line
    assert cb.summary["cutout"] is None and cb.summary["best_checkpoint"] is None
    pickle.loads(pickle.dumps(cb))


def test_flip_on_digits_warns_naming_the_data_module() -> None:
    with pytest.warns(UserWarning, match=r"DigitsDataModule: 'hflip' flips change the label .* remove it"):
        DigitsDataModule(image_size=16, augmentations=[{"name": "hflip"}, {"name": "rotate"}])
