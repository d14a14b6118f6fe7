"""Callbacks on a LightningModule lightkit did not write: tensor predictions, any encoder attribute,
monitored keys that are never logged, hard labels under MixUp/CutMix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.curves import LossCurves
from lightkit.callbacks.mixing import MixUpCutMix
from lightkit.callbacks.prediction_writer import PredictionWriter, _as_dict
from lightkit.callbacks.save_encoder import SaveEncoder


class Own(LightningModule):
    """Own names (backbone, classifier), own keys (val_loss), predict_step returning probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.classifier = nn.Linear(16, 4)
        self.seen_hard: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch[0])
        self.seen_hard.append(MixUpCutMix.hard_labels(batch[1]))
        acc = (logits.argmax(1) == MixUpCutMix.hard_labels(batch[1])).float().mean()
        self.log("train_acc", acc)
        return F.cross_entropy(logits, batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def predict_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch[0]).softmax(1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()), batch_size=8)


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    return Trainer(max_steps=4, accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks, **kwargs)


def test_prediction_writer_takes_a_probability_tensor(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    _trainer(tmp_path, [PredictionWriter(output=str(out))]).predict(Own(), _loader())
    rows = out.read_text().splitlines()
    assert len(rows) == 17 and rows[0].startswith("input,label,probability,top2_label")


def test_prediction_writer_output_forms() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(_as_dict(logits)["probs"], logits.softmax(1))  # logits: softmax
    probs = logits.softmax(1)
    assert torch.equal(_as_dict(probs)["probs"], probs)  # probabilities as they are
    assert torch.equal(_as_dict({"logits": logits, "index": torch.arange(2)})["index"], torch.arange(2))
    with pytest.raises(TypeError, match=r"predict_step returned Tensor of shape \(2,\); expected an \(N, C\) tensor"):
        _as_dict(torch.zeros(2))
    with pytest.raises(TypeError, match=r"predict_step returned list; expected"):
        _as_dict([1, 2])


def test_save_encoder_takes_the_attribute_name(tmp_path: Path) -> None:
    path = tmp_path / "backbone.safetensors"
    model = Own()
    _trainer(tmp_path, [SaveEncoder(path=str(path), attribute="backbone", use_best=False)]).fit(model, _loader())
    saved = load_file(path)
    assert set(saved) == {"0.weight", "0.bias"} and torch.equal(saved["0.weight"], model.backbone[0].weight.detach())


def test_save_encoder_names_the_modules_when_the_attribute_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Own has no module at attribute='encoder'; its modules are \['backbone', "
                                         r"'classifier'\]"):
        SaveEncoder(path=str(tmp_path / "x.safetensors")).setup(_trainer(tmp_path, []), Own(), "fit")


def test_loss_curves_warns_once_about_keys_never_logged(tmp_path: Path) -> None:
    curves = LossCurves(dirpath=str(tmp_path / "monitor"))
    with pytest.warns(UserWarning, match=r"LossCurves: 'val/loss', 'val/acc' never logged by Own.*'val_loss'"):
        _trainer(tmp_path, [curves], val_check_interval=2).fit(Own(), _loader(), _loader())
    fitted = LossCurves(val_loss="val_loss", val_acc="", dirpath=str(tmp_path / "m2"))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error", UserWarning)
        _trainer(tmp_path, [fitted], val_check_interval=2).fit(Own(), _loader(), _loader())
    assert all(v == v for v in fitted.val["loss"])  # no NaN: the key is logged


def test_mixup_hard_labels_for_the_modules_own_metrics(tmp_path: Path) -> None:
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    assert MixUpCutMix.hard_labels(soft).tolist() == [0, 1]
    assert MixUpCutMix.hard_labels(torch.tensor([1, 0])).tolist() == [1, 0]
    model = Own()
    _trainer(tmp_path, [MixUpCutMix(mixup_alpha=0.4, num_classes=4, append_hard_labels=True)]).fit(model, _loader())
    assert all(h.shape == (8,) and h.dtype == torch.long for h in model.seen_hard)
