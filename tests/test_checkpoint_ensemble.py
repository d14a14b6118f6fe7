"""``ensemble_predict``: a Lightning checkpoint and a snapshot-style file; the ensemble equals the mean of the
members' softmax (oracle), members and ensemble are scored on the test split, the CSV is written."""

from __future__ import annotations

import csv
from typing import Any

import lightning
import pytest
import torch

from lightkit.data import DigitsDataModule
from lightkit.ensemble import ensemble_predict
from lightkit.functional.ensemble import classification_metrics
from lightkit.models.classifier import ImageClassifier
from tests.helpers.tiny_fit import tiny_fit, tiny_model


def test_ensemble_predict_oracle(tmp_path: Any) -> None:
    first = tiny_model()
    trainer = tiny_fit(first, [], tmp_path, max_steps=1, limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    torch.manual_seed(1)
    second = ImageClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
    torch.save({"state_dict": second.state_dict(), "hyper_parameters": dict(second.hparams),
                "pytorch-lightning_version": lightning.__version__}, tmp_path / "b.pt")
    dm = DigitsDataModule(image_size=32, batch_size=128, test_fraction=0.1)

    result = ensemble_predict([str(tmp_path / "a.ckpt"), str(tmp_path / "b.pt")], dm)

    x, y = (torch.cat(t) for t in zip(*dm.test_dataloader(), strict=True))
    with torch.no_grad():
        oracle = torch.stack([m.eval()(x).softmax(1) for m in (first, second)])
    torch.testing.assert_close(result.member_probs, oracle)
    torch.testing.assert_close(result.probs, oracle.mean(0))
    assert torch.equal(result.target, y) and torch.equal(result.index, torch.arange(len(y)))
    assert result.metrics == pytest.approx(classification_metrics(oracle.mean(0), y))
    assert result.member_metrics[1] == pytest.approx(classification_metrics(oracle[1], y))
    assert "ensemble (2)" in result.table()
    rows = list(csv.reader(result.to_csv(tmp_path / "e.csv", class_names=dm.class_names).open()))
    assert rows[0] == ["input", "label", "probability", "member0_label", "member1_label"] and len(rows) == len(y) + 1


def test_raises(tmp_path: Any) -> None:
    dm = DigitsDataModule(image_size=32)
    with pytest.raises(ValueError, match=r"ensemble_predict: got 1 checkpoint\(s\); an ensemble needs two or more"):
        ensemble_predict(["a.ckpt"], dm)
    with pytest.raises(ValueError, match=r"ensemble_predict: checkpoint\(s\) \[.nope.ckpt., .*\] do not exist"):
        ensemble_predict(["nope.ckpt", str(tmp_path)], dm)
