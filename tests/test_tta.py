"""Test-time augmentation: golden views, the TTA output equals the mean over its views (oracle), the callback at
test and predict, flips only where the data module declares them label-preserving."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.tta import TTA
from lightkit.functional.tta import tta_probs, tta_view_names, tta_views
from tests.helpers.tiny_fit import tiny_model


def test_views_golden() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = tta_views(x, flips=True, shifts=1)
    assert tta_view_names(True, 1) == ["identity", "hflip", "shift(-1,0)", "shift(1,0)", "shift(0,-1)", "shift(0,1)"]
    assert torch.equal(views[0], x)
    assert views[1][0, 0].tolist() == [[2, 1, 0], [5, 4, 3], [8, 7, 6]]
    assert views[2][0, 0].tolist() == [[3, 4, 5], [6, 7, 8], [6, 7, 8]]  # content up one row, edge replicated
    assert views[3][0, 0].tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5]]
    assert views[4][0, 0].tolist() == [[1, 2, 2], [4, 5, 5], [7, 8, 8]]
    assert views[5][0, 0].tolist() == [[0, 0, 1], [3, 3, 4], [6, 6, 7]]
    crop = tta_views(torch.randn(2, 3, 8, 8), crop=0.5)
    assert len(crop) == 2 and crop[1].shape == (2, 3, 8, 8)


def test_tta_probs_is_mean_over_views() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(5)).eval()
    x = torch.randn(3, 1, 8, 8)
    model(x)
    got = tta_probs(model, x, flips=True, shifts=2, crop=0.75)
    with torch.no_grad():
        oracle = torch.stack([model(v).softmax(1) for v in tta_views(x, flips=True, shifts=2, crop=0.75)]).mean(0)
    torch.testing.assert_close(got, oracle)


class _Data(LightningDataModule):
    def __init__(self, flips_preserve_label: bool) -> None:
        super().__init__()
        self.flips_preserve_label = flips_preserve_label
        g = torch.Generator().manual_seed(3)
        self.x, self.y = torch.randn(6, 1, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=3)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, torch.arange(6)), batch_size=3)


def _trainer(tmp_path: Any, tta: TTA) -> Trainer:
    return Trainer(logger=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[tta],
                   enable_progress_bar=False, enable_model_summary=False)


@pytest.mark.parametrize("declared", [True, False])
def test_callback_at_test_and_predict(declared: bool, tmp_path: Any) -> None:
    model, data, tta = tiny_model().eval(), _Data(declared), TTA(shifts=2)
    trainer = _trainer(tmp_path, tta)
    out = trainer.test(model, datamodule=data, verbose=False)[0]
    assert tta.view_names()[:2] == (["identity", "hflip"] if declared else ["identity", "shift(-2,0)"])
    with torch.no_grad():
        views = tta_views(data.x, flips=declared, shifts=2)
        oracle = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    nll = float(-oracle.gather(1, data.y.view(-1, 1)).log().mean())
    assert out["tta/test_nll"] == pytest.approx(nll, rel=1e-5)
    assert out["tta/test_acc"] == pytest.approx(float((oracle.argmax(1) == data.y).float().mean()))
    assert out["tta/views"] == len(views)
    predictions = trainer.predict(model, datamodule=data)
    torch.testing.assert_close(torch.cat([p["probs"] for p in predictions]), oracle)


class _TrainData(_Data):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=3)


def test_flips_true_on_data_that_forbids_them_stops_a_fit_before_it_trains(tmp_path: Any) -> None:
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(logger=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[TTA(flips=True)],
                      max_steps=2, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="TTA: flips=True but _TrainData.flips_preserve_label is False"):
        trainer.fit(model, datamodule=_TrainData(False))
    assert trainer.global_step == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_raises(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="TTA: flips=True but _Data.flips_preserve_label is False"):
        _trainer(tmp_path, TTA(flips=True)).test(tiny_model(), datamodule=_Data(False), verbose=False)
    with pytest.raises(ValueError, match="tta_view_names: shifts=-1 must be >= 0 pixels"):
        TTA(shifts=-1)
    with pytest.raises(ValueError, match=r"tta_view_names: crop=1.5 must be a fraction of the side in \(0, 1\)"):
        TTA(crop=1.5)
    with pytest.raises(ValueError, match=r"tta_views: x has shape \(3, 8, 8\)"):
        tta_views(torch.zeros(3, 8, 8))
