"""``ImageFolderDataModule`` and ``CSVDataModule`` on tiny PNGs made from real digit images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from lightkit.data import CSVDataModule, ImageFolderDataModule
from lightkit.data.errors import BadImageError, DataError

CLASSES = ("0", "1", "2")


@pytest.fixture(scope="module")
def digit_images() -> dict[str, list[np.ndarray]]:
    """12 uint8 8x8 images per class for digits 0, 1, 2."""
    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)
    return {c: [images[i] for i in np.flatnonzero(digits.target == int(c))[:12]] for c in CLASSES}


def _write(folder: Path, images: list[np.ndarray], mode: str = "RGB", start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{start + i:03d}.png"
        Image.fromarray(img, mode="L").convert(mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def flat(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> Path:
    for c in CLASSES:
        _write(tmp_path / "flat" / c, digit_images[c][:10])
    return tmp_path / "flat"


def test_flat_folder(flat: Path) -> None:
    dm = ImageFolderDataModule(str(flat), batch_size=64, val_fraction=0.1, test_fraction=0.2, image_size=8,
                               channels=3)
    assert (dm.num_classes, dm.in_chans, dm.class_names) == (3, 3, list(CLASSES))
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 21, "val": 3, "test": 6}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (21, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sorted(torch.bincount(y).tolist()) == [7, 7, 7]
    torch.testing.assert_close(x[:, 0], x[:, 1])  # gray content saved as RGB
    dm.setup("predict")
    next(iter(dm.predict_dataloader()))
    assert len(dm.predict_items) == 6 and all(item.endswith(".png") for item in dm.predict_items)


def test_native_size_and_rgb_to_gray(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    for c in CLASSES:
        _write(tmp_path / "d" / c, digit_images[c][:10])
    dm = ImageFolderDataModule(str(tmp_path / "d"), channels=1, mean=[0.0], std=[1.0], val_fraction=0.0,
                               test_fraction=0.0)
    dm.setup("fit")
    assert dm.preprocessing["input_size"] == (1, 8, 8)  # native size, nothing resized
    x, _ = dm._datasets["train"].tensors
    assert x.shape == (30, 1, 8, 8)
    for i, name in enumerate(dm._names["train"]):
        path = Path(name)
        original = digit_images[path.parent.name][int(path.stem)]
        # the luma of an R=G=B pixel is the pixel itself
        np.testing.assert_array_equal(np.rint(x[i, 0].numpy() * 255).astype(np.uint8), original)


def test_gray_png_replicated_to_rgb(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    for c in CLASSES:
        _write(tmp_path / "g" / c, digit_images[c][:10], mode="L")
    dm = ImageFolderDataModule(str(tmp_path / "g"), image_size=16, channels=3)
    assert dm.in_chans == 3
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16)
    torch.testing.assert_close(x[:, 0], x[:, 2])


def test_train_val_test_folders(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    for c in CLASSES:
        _write(tmp_path / "s" / "train" / c, digit_images[c][:6])
        _write(tmp_path / "s" / "val" / c, digit_images[c][6:8])
        _write(tmp_path / "s" / "test" / c, digit_images[c][8:11])
    dm = ImageFolderDataModule(str(tmp_path / "s"), image_size=8)
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 9}
    assert all("/val/" in name for name in dm._names["val"])
    # without test/: the test split comes from train/
    (tmp_path / "t").mkdir()
    for c in CLASSES:
        _write(tmp_path / "t" / "train" / c, digit_images[c][:10])
        _write(tmp_path / "t" / "val" / c, digit_images[c][10:12])
    dm = ImageFolderDataModule(str(tmp_path / "t"), test_fraction=0.2)
    assert dm.split_sizes() == {"train": 24, "val": 6, "test": 6}
    (tmp_path / "t" / "validation").mkdir()
    with pytest.warns(UserWarning, match=r"ignored folders \['validation'\] next to train/"):
        ImageFolderDataModule(str(tmp_path / "t"))


def test_csv_string_and_int_labels(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    rows = []
    for c, name in zip(CLASSES, ("cat", "ant", "bee"), strict=True):
        for path in _write(tmp_path / "imgs" / name, digit_images[c][:10]):
            rows.append(f"imgs/{name}/{path.name},{name},{c if c != '2' else 10}")
    (tmp_path / "data.csv").write_text("file,animal,code\n" + "\n".join(rows) + "\n")
    dm = CSVDataModule(str(tmp_path / "data.csv"), path_column="file", label_column="animal", image_size=8,
                       channels=3)
    assert dm.class_names == ["ant", "bee", "cat"] and dm.in_chans == 3
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 21, "val": 3, "test": 6}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (21, 3, 8, 8)
    ints = CSVDataModule(str(tmp_path / "data.csv"), path_column="file", label_column="code")
    assert ints.class_names == ["0", "1", "10"]  # numeric order
    fixed = CSVDataModule(str(tmp_path / "data.csv"), path_column="file", label_column="animal",
                          classes=["cat", "bee", "ant", "dog"])
    assert fixed.num_classes == 4 and fixed._labels[0] == 0
    # paths relative to another root
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "d.csv").write_text((tmp_path / "data.csv").read_text())
    moved = CSVDataModule(str(tmp_path / "lists" / "d.csv"), path_column="file", label_column="animal",
                          root=str(tmp_path))
    moved.setup("test")
    assert len(moved.test_dataloader().dataset) == 6


def test_predict_folder_with_corrupt_file(tmp_path: Path, flat: Path,
                                          digit_images: dict[str, list[np.ndarray]]) -> None:
    _write(tmp_path / "new" / "sub", digit_images["1"][:3])
    (tmp_path / "new" / "broken.png").write_bytes(b"not a png at all")
    dm = ImageFolderDataModule(str(flat), predict_path=str(tmp_path / "new"), image_size=8, channels=3)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: first .*broken.png"):
        dm.setup("predict")
    x, index = next(iter(dm.predict_dataloader()))
    assert x.shape == (3, 3, 8, 8) and index.tolist() == [0, 1, 2]
    assert [Path(p).name for p in dm.predict_items] == ["000.png", "001.png", "002.png"]
    assert [Path(p).name for p in dm.predict_skipped] == ["broken.png"]
    # a CSV with a path column
    (tmp_path / "new" / "list.csv").write_text("path\nsub/001.png\nbroken.png\n")
    dm = ImageFolderDataModule(str(flat), predict_path=str(tmp_path / "new" / "list.csv"), image_size=8)
    with pytest.warns(UserWarning, match="skipped 1"):
        dm.setup("predict")
    assert dm.predict_items == ["sub/001.png"] and dm.predict_skipped[0].endswith("broken.png")


def test_bad_image_policy(flat: Path) -> None:
    (flat / "1" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dm = ImageFolderDataModule(str(flat))
    with pytest.raises(BadImageError, match=r"unreadable image .*zz_corrupt.png.*set on_bad_image: skip"):
        dm.setup("fit")
    dm = ImageFolderDataModule(str(flat), on_bad_image="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: first .*zz_corrupt.png"):
        dm.setup("fit")
    assert sum(dm.split_sizes().values()) == 30 and dm.skipped_images[0].endswith("zz_corrupt.png")


def test_non_image_files_ignored_with_warning(flat: Path) -> None:
    (flat / "0" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match=r"ignored 1 files that are not images"):
        dm = ImageFolderDataModule(str(flat))
    assert dm.split_sizes()["test"] == 6


def test_folder_errors(tmp_path: Path, flat: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    with pytest.raises(DataError, match=r"root='.*missing' is not a folder"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    (tmp_path / "loose").mkdir()
    _write(tmp_path / "loose", digit_images["0"][:2])
    with pytest.raises(DataError, match=r"has no class folders"):
        ImageFolderDataModule(str(tmp_path / "loose"))
    (flat / "3").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*3' has no images"):
        ImageFolderDataModule(str(flat))
    (flat / "3").rmdir()
    with pytest.raises(DataError, match=r"class folder '.*2' is not one of classes \['0', '1'\]"):
        ImageFolderDataModule(str(flat), classes=["0", "1"])
    for c in ("0", "1"):
        _write(tmp_path / "s" / "train" / c, digit_images[c][:4])
    _write(tmp_path / "s" / "val" / "7", digit_images["2"][:2])
    with pytest.raises(DataError, match=r"class folder '.*val/7' is not one of the class folders of train/"):
        ImageFolderDataModule(str(tmp_path / "s"))
    with pytest.raises(DataError, match=r"on_bad_image='ignore'; use 'error'"):
        ImageFolderDataModule(str(flat), on_bad_image="ignore")
    with pytest.raises(DataError, match=r"cannot split 30 images of 3 classes"):
        ImageFolderDataModule(str(flat), val_fraction=0.05, test_fraction=0.05).setup("fit")


def test_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"csv_path='.*nope.csv' is not a file"):
        CSVDataModule(str(tmp_path / "nope.csv"))
    csv = tmp_path / "a.csv"
    csv.write_text("path,label\na.png,cat\nb.png,dog\n")
    with pytest.raises(DataError, match=r"label_column='kind' is not a column of .* \(columns: \['path', 'label'\]\)"):
        CSVDataModule(str(csv), label_column="kind")
    with pytest.raises(DataError, match=r"label 'dog' in .* is not in classes \['cat'\]; add it to classes"):
        CSVDataModule(str(csv), classes=["cat"])
    csv.write_text("path,label\na.png,cat\nb.png,\n")
    with pytest.raises(DataError, match=r"1 rows of .* have no 'label' \(first: data row 2\)"):
        CSVDataModule(str(csv))
    with pytest.raises(DataError, match=r"root='.*nowhere' is not a folder"):
        CSVDataModule(str(csv), root=str(tmp_path / "nowhere"))
    # a missing image file is an unreadable image
    csv.write_text("path,label\n" + "\n".join(f"m{i}.png,{i % 2}" for i in range(10)) + "\n")
    with pytest.raises(BadImageError, match=r"unreadable image .*m0.png"):
        CSVDataModule(str(csv)).setup("fit")


def test_channels_follow_the_images_when_unset(tmp_path: Path, digit_images: dict[str, list[np.ndarray]]) -> None:
    rng = np.random.default_rng(0)
    for c in CLASSES:
        _write(tmp_path / "gray" / c, digit_images[c][:4])  # gray content saved as RGB PNGs
        _write(tmp_path / "gray_l" / c, digit_images[c][:4], mode="L")
        folder = tmp_path / "colour" / c
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    assert ImageFolderDataModule(str(tmp_path / "gray")).in_chans == 1
    assert ImageFolderDataModule(str(tmp_path / "gray_l")).in_chans == 1
    assert ImageFolderDataModule(str(tmp_path / "colour")).in_chans == 3
    assert ImageFolderDataModule(str(tmp_path / "gray"), channels=3).in_chans == 3
    dm = ImageFolderDataModule(str(tmp_path / "gray"), mean=[0.5], std=[0.25], image_size=8)
    assert dm.mean == (0.5,) and dm.std == (0.25,)
    with pytest.raises(DataError, match=r"mean=\[0.1, 0.2, 0.3\] has 3 values for 1 channels"):
        ImageFolderDataModule(str(tmp_path / "gray"), mean=[0.1, 0.2, 0.3])


def test_global_seed_moves_the_split_unless_the_data_has_its_own(flat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch import seed_everything

    def test_names(**kwargs: object) -> list[str]:
        dm = ImageFolderDataModule(str(flat), image_size=8, **kwargs)
        dm.setup("test")
        return sorted(dm._names["test"])

    seed_everything(0)
    zero = test_names()
    seed_everything(1)
    one = test_names()
    assert zero != one  # the run's seed changed the split
    assert test_names(seed=0) == zero  # an explicit data seed wins over the run's
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert test_names() == zero  # no seed anywhere: 0
