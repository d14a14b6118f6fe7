"""Streaming image folders (``in_memory: false / auto``): same tensors as in memory, the auto threshold,
unreadable images, per-rank shares, and a SIGKILL mid-epoch resumed with the rest of that epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightkit.data import CSVDataModule, ImageFolderDataModule
from lightkit.data.augment import build_augmentations
from lightkit.data.errors import BadImageError, DataError
from lightkit.data.images import decode_image, resize_images
from lightkit.data.stream import (
    ResumableLoader,
    ResumableSampler,
    StreamingImageDataset,
    augment_sample,
    default_num_workers,
    scan_headers,
    skip_bad_collate,
)

CLASSES = ("a", "b", "c")
SCRIPT = Path(__file__).with_name("stream_fit.py")


def _folder(root: Path, per_class: int = 12, size: int = 16, seed: int = 0) -> Path:
    """Random colour JPEGs and PNGs of varying sizes (the resize matters); pixel sums all differ."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = size + int(rng.integers(0, 6))
            img = Image.fromarray(rng.integers(0, 256, (side, side + 2, 3), dtype=np.uint8))
            img.save(root / c / (f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png"))
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "imgs")


def _batches(loader: torch.utils.data.DataLoader) -> list[list[torch.Tensor]]:
    return [list(batch) for batch in loader]


def test_streaming_gives_the_in_memory_tensors_and_order(folder: Path) -> None:
    kwargs = {"batch_size": 5, "image_size": 12, "seed": 1, "num_workers": 0}
    memory = ImageFolderDataModule(str(folder), in_memory=True, **kwargs)
    stream = ImageFolderDataModule(str(folder), in_memory=False, **kwargs)
    memory.setup("fit"), stream.setup("fit")
    assert stream._streams() and not memory._streams()
    assert stream.split_sizes() == memory.split_sizes() == {"train": 24, "val": 4, "test": 8}
    for name in ("train_dataloader", "val_dataloader"):
        for (xm, ym), (xs, ys) in zip(_batches(getattr(memory, name)()), _batches(getattr(stream, name)()),
                                      strict=True):
            torch.testing.assert_close(xs, xm, rtol=0, atol=1e-6)
            assert torch.equal(ys, ym)
    stream.setup("test"), memory.setup("test")
    predicted = torch.cat([b[0] for b in stream.predict_dataloader()])
    torch.testing.assert_close(predicted, torch.cat([b[0] for b in memory.predict_dataloader()]), rtol=0, atol=1e-6)
    assert stream.predict_items == memory.predict_items


def test_streaming_augmentation_is_the_in_memory_pipeline_seeded_per_sample(folder: Path) -> None:
    dm = ImageFolderDataModule(str(folder), in_memory=False, batch_size=4, image_size=12, seed=5,
                               augmentations="strong", num_workers=0)
    dm.setup("fit")
    dataset = dm._dataset("train")
    assert isinstance(dataset, StreamingImageDataset)
    transform = build_augmentations("strong", 12, "constant", True)
    mean = torch.tensor(dm.preprocessing["mean"]).view(-1, 1, 1)
    std = torch.tensor(dm.preprocessing["std"]).view(-1, 1, 1)
    for epoch, index in ((0, 0), (0, 7), (3, 7)):
        resized = resize_images([decode_image(dataset.paths[index], 3)], (12, 12))[0]
        expected = augment_sample(resized.permute(1, 2, 0).contiguous().numpy(), transform, 5, epoch, index)
        x, _ = dataset[(epoch, index)]
        expected_x = (torch.from_numpy(expected).permute(2, 0, 1).float() / 255 - mean) / std
        torch.testing.assert_close(x, expected_x, rtol=0, atol=1e-6)
    # the same (epoch, index) gives the same sample however often it is read; another epoch differs
    assert torch.equal(dataset[(2, 3)][0], dataset[(2, 3)][0])
    assert not torch.equal(dataset[(2, 3)][0], dataset[(4, 3)][0])


def test_auto_picks_the_path_at_the_threshold(folder: Path) -> None:
    sizes, _, _ = scan_headers(sorted(folder.rglob("*.*")))
    # decoded originals at 3 channels + a float32 copy at the 12 px input, per image
    estimate = (sum(h * w for h, w, _ in sizes) * 3 + len(sizes) * 3 * 12 * 12 * 4) / 2**30
    below = ImageFolderDataModule(str(folder), image_size=12, in_memory_limit_gb=estimate * 1.001)
    above = ImageFolderDataModule(str(folder), image_size=12, in_memory_limit_gb=estimate * 0.999)
    assert not below._streams() and above._streams()
    below.setup("fit"), above.setup("fit")
    assert not isinstance(below._dataset("train"), StreamingImageDataset)
    assert isinstance(above._dataset("train"), StreamingImageDataset)
    with pytest.raises(DataError, match=r"in_memory='sometimes'; use auto"):
        ImageFolderDataModule(str(folder), in_memory="sometimes")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"in_memory_limit_gb=0 must be a positive"):
        ImageFolderDataModule(str(folder), in_memory_limit_gb=0)


def test_unreadable_images_streaming(folder: Path) -> None:
    (folder / "a" / "not_an_image.png").write_bytes(b"this is text")
    good = folder / "b" / "001.jpg"
    truncated = folder / "b" / "truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])  # a valid header, then a third of the pixels missing
    kwargs = {"batch_size": 64, "image_size": 12, "in_memory": False, "num_workers": 0, "val_fraction": 0.0,
              "test_fraction": 0.0}
    with pytest.raises(BadImageError, match=r"unreadable image .*not_an_image.png.*set on_bad_image: skip"):
        ImageFolderDataModule(str(folder), **kwargs).setup("fit")
    (folder / "a" / "not_an_image.png").unlink()
    dm = ImageFolderDataModule(str(folder), **kwargs)
    dm.setup("fit")
    with pytest.raises(BadImageError, match=r"unreadable image .*truncated.jpg.*set on_bad_image: skip"):
        next(iter(dm.train_dataloader()))
    (folder / "a" / "not_an_image.png").write_bytes(b"this is text")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: first .*not_an_image.png"):
        dm = ImageFolderDataModule(str(folder), on_bad_image="skip", **kwargs)
        dm.setup("fit")
    assert [Path(p).name for p in dm.skipped_images] == ["not_an_image.png"]
    x, y = next(iter(dm.train_dataloader()))  # the truncated image is dropped from its batch
    assert len(dm._dataset("train")) == 37 and x.shape == (36, 3, 12, 12) and len(y) == 36


def test_csv_streams_too(folder: Path) -> None:
    rows = [f"{c}/{i:03d}.{'jpg' if i % 2 else 'png'},{c}" for c in CLASSES for i in range(12)]
    (folder / "data.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    kwargs = {"batch_size": 8, "image_size": 12, "seed": 2, "num_workers": 0}
    memory = CSVDataModule(str(folder / "data.csv"), in_memory=True, **kwargs)
    stream = CSVDataModule(str(folder / "data.csv"), in_memory=False, **kwargs)
    memory.setup("fit"), stream.setup("fit")
    for (xm, ym), (xs, ys) in zip(_batches(memory.train_dataloader()), _batches(stream.train_dataloader()),
                                  strict=True):
        torch.testing.assert_close(xs, xm, rtol=0, atol=1e-6)
        assert torch.equal(ys, ym)


def test_few_shot_and_classes_work_streaming(folder: Path) -> None:
    dm = ImageFolderDataModule(str(folder), in_memory=False, samples_per_class=2, image_size=12, num_workers=0,
                               classes=["c", "b", "a"])
    dm.setup("fit")
    assert dm.split_sizes()["train"] == 6 and dm.class_names == ["c", "b", "a"]
    _, y = next(iter(dm.train_dataloader()))
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]


class _Echo(torch.utils.data.Dataset):
    """``dataset[key] == key``: the loader's batches show what the sampler asked for."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: object) -> object:
        return key


def test_each_rank_reads_its_share_and_a_resumed_epoch_continues() -> None:
    data = list(range(10))
    shares = [list(ResumableSampler(data, seed=4, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == data and len(shares[0]) == len(shares[1]) == 5
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(4)).tolist()
    assert list(ResumableSampler(data, seed=4)) == expected
    loader = ResumableLoader(_Echo(), ResumableSampler(data, seed=4, pairs=True), batch_size=3, collate_fn=list)
    loader.sampler.set_epoch(2)
    straight = list(loader)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "taken": 3, "num_samples": 10}
    fresh = ResumableLoader(_Echo(), ResumableSampler(data, seed=4, pairs=True), batch_size=3, collate_fn=list)
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert [pair for batch in rest for pair in batch] == [pair for batch in straight for pair in batch][3:]
    assert all(epoch == 2 for batch in straight for epoch, _ in batch)
    fresh.sampler.set_epoch(3)
    assert len([p for b in fresh for p in b]) == 10  # the next epoch is whole again
    with pytest.raises(ValueError, match=r"read 10 samples per epoch on this rank, this run reads 5"):
        ResumableLoader(data, ResumableSampler(data, seed=4, num_replicas=2, rank=0)).load_state_dict(state)


def test_skip_bad_collate_and_default_workers() -> None:
    x, y = skip_bad_collate([None, (torch.ones(2), torch.tensor(1)), None])
    assert x.shape == (1, 2) and y.tolist() == [1]
    x, y = skip_bad_collate([None])
    assert len(x) == 0 and len(y) == 0
    assert 1 <= default_num_workers() <= 8 and default_num_workers(world_size=1000) == 1


def _records(path: Path) -> list[dict]:
    lines = []
    for part in sorted(path.parent.glob(path.name + ".*")):
        lines += [json.loads(line) for line in part.read_text().splitlines()]
    return lines


def _run(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    root = str(SCRIPT.parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **(env_extra or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=root)


@pytest.mark.parametrize("augment", [False, True])
def test_sigkill_mid_epoch_then_resume_reads_the_rest_of_that_epoch(tmp_path: Path, augment: bool) -> None:
    """36 images, batch 4, 9 steps per epoch, 2 epochs. Straight run vs a run SIGKILLed after step 14
    (epoch 1, mid-way; last checkpoint at step 12) and resumed from that checkpoint."""
    extra = ["--augment"] if augment else []
    straight_dir, crash_dir = tmp_path / "straight", tmp_path / "crash"
    _folder(straight_dir / "imgs"), _folder(crash_dir / "imgs")
    done = _run([str(straight_dir / "imgs"), str(straight_dir / "seen.jsonl"), *extra])
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _run([str(crash_dir / "imgs"), str(crash_dir / "seen.jsonl"), "--kill_at", "14", *extra])
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = crash_dir / "ckpt" / "epoch=1-step=12.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (crash_dir / "ckpt").iterdir())
    resumed = _run([str(crash_dir / "imgs"), str(crash_dir / "resumed.jsonl"), "--ckpt", str(ckpt), *extra])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = _records(straight_dir / "seen.jsonl")
    before, after = _records(crash_dir / "seen.jsonl"), _records(crash_dir / "resumed.jsonl")
    assert len(straight) == 18 and [r["step"] for r in after] == list(range(12, 18))
    epoch1 = [i for r in straight if r["epoch"] == 1 for i in r["ids"]]
    assert len(epoch1) == len(set(epoch1)) == 36  # every image once per epoch
    # the crashed run read steps 0..13; the resumed run reads exactly steps 12..17 of the straight run
    assert [r["ids"] for r in before] == [r["ids"] for r in straight[:14]]
    assert [r["ids"] for r in after] == [r["ids"] for r in straight[12:]]


def test_decode_image_draft_shrinks_jpeg_only_and_never_below_the_asked_side(tmp_path) -> None:
    """The pixel baseline decodes a streaming folder's JPEGs at reduced scale (PIL draft); PNGs stay whole."""
    from PIL import Image

    from lightkit.data.images import decode_image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (256, 200, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(array).save(tmp_path / "a.png")
    full = decode_image(tmp_path / "a.jpg", 3)
    small = decode_image(tmp_path / "a.jpg", 3, draft=16)
    assert full.shape == (256, 200, 3) and small.shape == (32, 25, 3)  # 1/8 scale: both sides still >= 16
    assert decode_image(tmp_path / "a.jpg", 1, draft=60).shape == (128, 100, 1)  # 1/2: 1/4 would give 50 < 60
    assert decode_image(tmp_path / "a.png", 3, draft=16).shape == (256, 200, 3)


def test_scan_headers_in_threaded_chunks_keeps_the_order_and_the_bad_files(tmp_path) -> None:
    """Above 256 files the scan runs in chunks of 256 on threads: the same result, in the files' order."""
    from PIL import Image

    paths = []
    for i in range(600):
        path = tmp_path / f"{i:04d}.png"
        if i == 300:
            path.write_bytes(b"not an image")
        else:
            Image.new("L" if i % 2 else "RGB", (8 + i % 5, 9)).save(path)
        paths.append(path)
    threaded = scan_headers(paths, threads=4)
    assert threaded == scan_headers(paths, threads=1)
    sizes, kept, bad = threaded
    assert len(sizes) == 599 and 300 not in kept and bad[0][0] == str(paths[300])
    assert sizes[0] == (9, 8, 3) and sizes[1] == (9, 9, 1) and kept[300] == 301
