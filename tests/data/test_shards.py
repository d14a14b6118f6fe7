"""LitData shards: ``prepare`` (function and command), ``ShardDataModule`` tensors, unreadable images,
2-process DDP (every sample once per epoch across ranks) and a SIGKILL mid-epoch resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lightkit.data import ImageFolderDataModule, ShardDataModule, prepare_shards
from lightkit.data.errors import BadImageError, DataError
from lightkit.data.shards import META_FILE
from tests.data.test_streaming import _folder, _records, _run

ROOT = Path(__file__).parents[2]


def _sorted_by_content(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(x.flatten(1).double().sum(1))
    return x[order], y[order]


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    dm = ImageFolderDataModule(str(_folder(tmp_path / "imgs")), image_size=12, seed=1)
    meta = prepare_shards(dm, tmp_path / "shards", num_workers=1)
    assert meta["counts"] == {"train": 24, "val": 4, "test": 8} and meta["class_names"] == ["a", "b", "c"]
    return tmp_path / "shards"


def test_shards_give_the_folder_tensors(tmp_path: Path, shards: Path) -> None:
    folder = ImageFolderDataModule(str(tmp_path / "imgs"), image_size=12, seed=1, in_memory=False, num_workers=0,
                                   batch_size=64)
    folder.setup("fit"), folder.setup("test")
    dm = ShardDataModule(str(shards), batch_size=64, num_workers=0)
    assert (dm.num_classes, dm.in_chans, dm.class_names) == (3, 3, ["a", "b", "c"])
    assert dm.split_sizes() == folder.split_sizes()
    dm.setup("fit")
    assert dm.preprocessing == folder.preprocessing  # image_size 12 stored with the shards
    for split in ("val", "test", "train"):
        x, y = _sorted_by_content(*next(iter(getattr(dm, f"{split}_dataloader")())))
        xf, yf = _sorted_by_content(*next(iter(folder._loader(folder._dataset(split), shuffle=False))))
        torch.testing.assert_close(x, xf, rtol=0, atol=1e-6)
        assert torch.equal(y, yf)


def test_prepare_applies_on_bad_image_and_refuses_a_used_folder(tmp_path: Path) -> None:
    images = _folder(tmp_path / "imgs")
    good = images / "a" / "001.jpg"
    data = good.read_bytes()
    (images / "a" / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImageError, match=r"unreadable image .*truncated.jpg.*on_bad_image: skip"):
        prepare_shards(ImageFolderDataModule(str(images), image_size=12), tmp_path / "out1", num_workers=1)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: first .*truncated.jpg"):
        meta = prepare_shards(ImageFolderDataModule(str(images), image_size=12, on_bad_image="skip"),
                              tmp_path / "out2", num_workers=1)
    assert sum(meta["counts"].values()) == 36 and [Path(p).name for p in meta["skipped"]] == ["truncated.jpg"]
    with pytest.raises(DataError, match=r"output=.*out2' is not empty; give a new folder"):
        prepare_shards(ImageFolderDataModule(str(images), image_size=12), tmp_path / "out2")
    with pytest.raises(DataError, match=r"has no lightkit.json; write shards with `python cli.py prepare"):
        ShardDataModule(str(tmp_path))
    with pytest.raises(DataError, match=r"on_bad_image='maybe'; use 'error' or 'skip'"):
        ShardDataModule(str(tmp_path / "out2"), on_bad_image="maybe")  # type: ignore[arg-type]


def test_a_corrupt_sample_in_the_shards_follows_on_bad_image(tmp_path: Path) -> None:
    from litdata import optimize

    images = _folder(tmp_path / "imgs", per_class=2)
    items = [{"image": p.read_bytes(), "label": 0, "name": p.name} for p in sorted(images.rglob("*.*"))]
    items[2] = {"image": b"not an image", "label": 0, "name": "broken.jpg"}
    out = tmp_path / "shards"
    optimize(fn=_identity, inputs=items, output_dir=str(out / "train"), chunk_bytes="1MB", num_workers=1,
             verbose=False, start_method="fork")
    (out / META_FILE).write_text(json.dumps({"class_names": ["a", "b", "c"], "channels": 3, "flips": True,
                                             "native_size": [16, 18], "image_size": 12, "mean": None, "std": None,
                                             "counts": {"train": 6}}))
    with pytest.raises(BadImageError, match=r"unreadable image 'broken.jpg' in the shards.*on_bad_image: skip"):
        next(iter(ShardDataModule(str(out), batch_size=8, num_workers=0).train_dataloader()))
    x, y = next(iter(ShardDataModule(str(out), batch_size=8, num_workers=0, on_bad_image="skip").train_dataloader()))
    assert x.shape == (5, 3, 12, 12) and len(y) == 5


def _identity(item: dict) -> dict:
    return item


def test_prepare_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    images = _folder(tmp_path / "imgs", per_class=10)
    env_cmd = [sys.executable, str(ROOT / "cli.py"), "prepare"]
    done = subprocess.run([*env_cmd, "--data.init_args.root", str(images), "--data.init_args.image_size", "12",
                           "--output", str(tmp_path / "shards"), "--num_workers", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote train 21, val 3, test 6 images of 3 classes" in done.stdout
    assert json.loads((tmp_path / "shards" / META_FILE).read_text())["image_size"] == 12
    bad = subprocess.run([*env_cmd, "--data.init_args.rooot", str(images), "--output", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "Option 'rooot' is not accepted" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_two_process_ddp_reads_every_sample_once_per_epoch(tmp_path: Path, shards: Path) -> None:
    done = _run([str(shards), str(tmp_path / "seen.jsonl"), "--shards", "--devices", "2", "--workers", "1"])
    assert done.returncode == 0, done.stderr[-3000:]
    records = _records(tmp_path / "seen.jsonl")
    assert {r["rank"] for r in records} == {0, 1}
    for epoch in (0, 1):
        ids = [i for r in records if r["epoch"] == epoch for i in r["ids"]]
        per_rank = [sum(len(r["ids"]) for r in records if r["epoch"] == epoch and r["rank"] == k) for k in (0, 1)]
        assert per_rank == [12, 12] and len(ids) == len(set(ids)) == 24  # 24 train images, each once


def test_sigkill_mid_epoch_then_resume_on_shards(tmp_path: Path, shards: Path) -> None:
    """24 images, batch 4: 6 steps per epoch, 2 epochs; killed after step 9, resumed from step 8."""
    crash = tmp_path / "crash"
    shutil.copytree(shards, crash / "shards")
    straight = _run([str(shards), str(tmp_path / "seen.jsonl"), "--shards", "--save_every", "4"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _run([str(crash / "shards"), str(crash / "seen.jsonl"), "--shards", "--save_every", "4",
                   "--kill_at", "9"])
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = crash / "ckpt" / "epoch=1-step=8.ckpt"
    resumed = _run([str(crash / "shards"), str(crash / "resumed.jsonl"), "--shards", "--save_every", "4",
                    "--ckpt", str(ckpt)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = _records(tmp_path / "seen.jsonl")
    after = _records(crash / "resumed.jsonl")
    assert len(full) == 12 and [r["step"] for r in after] == list(range(8, 12))
    assert sorted(i for r in full if r["epoch"] == 1 for i in r["ids"]) == sorted(
        i for r in full if r["epoch"] == 0 for i in r["ids"])
    assert [r["ids"] for r in after] == [r["ids"] for r in full[8:]]
