"""Multi-task data modules: digits with parity / digit >= 5 / known rotation, and a CSV with several columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from lightkit.data import DigitsDataModule
from lightkit.data.errors import DataError
from lightkit.data.multitask import DigitsMultiTaskDataModule, MultiTaskCSVDataModule, rotate_images
from lightkit.models.multitask import MultiTaskClassifier


def test_rotate_images_direction_identity_and_fill() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre
    assert (rotate_images(x, torch.tensor([90.0]))[0, 0] > 0.5).nonzero().tolist() == [[1, 4]]  # now above it
    torch.testing.assert_close(rotate_images(x, torch.tensor([0.0])), x)
    corners = rotate_images(torch.full((1, 1, 8, 8), -2.0), torch.tensor([45.0]), fill=-2.0)
    torch.testing.assert_close(corners, torch.full((1, 1, 8, 8), -2.0))


def test_digits_targets_from_real_structure() -> None:
    dm = DigitsMultiTaskDataModule(batch_size=64, image_size=16, max_rotation=20.0)
    assert dm.task_names == ["digit", "parity", "ge5", "angle"] and dm.num_classes == 10
    dm.setup("fit")
    dm.setup("test")
    for split in ("train", "val", "test"):
        x, digit, parity, ge5, angle = dm._datasets[split].tensors
        assert digit.dtype == parity.dtype == ge5.dtype == torch.int64 and angle.dtype == torch.float32
        assert torch.equal(parity, digit % 2) and torch.equal(ge5, (digit >= 5).long())
        if split == "train":
            assert torch.equal(angle, torch.zeros_like(angle))  # drawn per step
        else:
            assert float(angle.abs().max()) <= 1.0 and float(angle.abs().mean()) > 0.3
    # The stored test images are the plain digits rotated by exactly the recorded angle.
    plain = DigitsDataModule(batch_size=64, image_size=16)
    plain.setup("test")
    x0 = plain._datasets["test"].tensors[0]
    x, *_, angle = dm._datasets["test"].tensors
    background = -torch.tensor(dm.preprocessing["mean"]) / torch.tensor(dm.preprocessing["std"])
    torch.testing.assert_close(x, rotate_images(x0, angle * 20.0, background.view(1, -1, 1, 1)))
    assert not torch.allclose(x, x0)


class _Batches(Callback):
    def __init__(self) -> None:
        self.batches: list[list[torch.Tensor]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.batches.append([t.clone() for t in batch])


def _fit_batches(tmp_path: Path) -> list[list[torch.Tensor]]:
    spy = _Batches()
    model = MultiTaskClassifier(tasks=[{"name": "digit"}], encoder="test_resnet", num_classes=10, in_chans=1)
    Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, callbacks=[spy], default_root_dir=tmp_path).fit(
        model, datamodule=DigitsMultiTaskDataModule(batch_size=8, image_size=16, samples_per_class=3))
    return spy.batches


def test_train_batches_rotated_per_step_reproducibly(tmp_path: Path) -> None:
    first, second = _fit_batches(tmp_path), _fit_batches(tmp_path)
    assert len(first) == 3
    angles = [b[4] for b in first]
    assert all(float(a.abs().max()) <= 1.0 and float(a.abs().max()) > 0 for a in angles)
    assert not torch.equal(angles[0], angles[1])  # fresh angles every step
    for a, b in zip(first, second, strict=True):
        for u, v in zip(a, b, strict=True):
            assert torch.equal(u, v)  # seeded: the same run sees the same rotations


def test_digits_errors() -> None:
    with pytest.raises(DataError, match=r"max_rotation=0.0 must be in \(0, 180\] degrees"):
        DigitsMultiTaskDataModule(max_rotation=0.0)


def _csv_folder(tmp_path: Path, broken: int | None = None) -> Path:
    rows = ["path,label,parity,size,colour"]
    for i in range(20):
        name = f"img{i}.png"
        if i == broken:
            (tmp_path / name).write_text("not an image")
        else:
            Image.fromarray(np.full((6, 6), 10 * i, dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{'cat' if i % 2 else 'dog'},{i % 2},{i + 0.5},{['red', 'blue'][i % 3 == 0]}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "data.csv"


def test_csv_several_label_columns(tmp_path: Path) -> None:
    csv = _csv_folder(tmp_path, broken=3)
    dm = MultiTaskCSVDataModule(str(csv), aux_columns=["parity", "size", "colour"], channels=1, image_size=6,
                                val_fraction=0.0, test_fraction=0.0, batch_size=32, on_bad_image="skip")
    assert dm.task_names == ["label", "parity", "size", "colour"] and dm.class_names == ["cat", "dog"]
    assert dm.task_classes == {"colour": ["blue", "red"]}
    assert dm.task_num_classes == {"label": 2, "colour": 2}
    dm.setup("fit")
    x, label, parity, size, colour = next(iter(dm.train_dataloader()))
    assert len(x) == 19 and len(dm.skipped_images) == 1
    assert (label.dtype, parity.dtype, size.dtype, colour.dtype) == (torch.int64, torch.int64, torch.float32,
                                                                     torch.int64)
    # Rows stay aligned after the unreadable image is dropped: each size identifies its row.
    rows = (size - 0.5).round().long()
    assert 3 not in rows.tolist()
    assert torch.equal(parity, rows % 2) and torch.equal(label, 1 - rows % 2)  # classes sorted: cat = 0 = odd
    assert torch.equal(colour, (rows % 3 != 0).long())  # blue = 0 for rows divisible by 3
    pixel = x[:, 0, 0, 0] * dm.preprocessing["std"][0] + dm.preprocessing["mean"][0]
    torch.testing.assert_close(pixel * 255, (10 * rows).float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aux_columns": []}, r"aux_columns=\[\] names no auxiliary target"),
        ({"aux_columns": ["parity", "parity"]}, r"aux_columns=\['parity', 'parity'\] repeats 'parity'"),
        ({"aux_columns": ["label"]}, r"repeats 'label' \(or it is the path / label column\)"),
        ({"aux_columns": ["weight"]}, r"aux_columns \['weight'\] are not columns of"),
    ],
)
def test_csv_errors(kwargs: dict, match: str, tmp_path: Path) -> None:
    csv = _csv_folder(tmp_path)
    with pytest.raises(DataError, match=match):
        MultiTaskCSVDataModule(str(csv), **kwargs)


def test_csv_empty_cell(tmp_path: Path) -> None:
    csv = _csv_folder(tmp_path)
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].replace(",1,", ",,", 1) if ",1," in lines[4] else lines[4].replace(",0,", ",,", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"1 rows of .* have no 'parity' \(first: data row 4\)"):
        MultiTaskCSVDataModule(str(csv), aux_columns=["parity"])
