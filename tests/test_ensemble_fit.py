"""``fit --ensemble N``: members trained one after another, reused / resumed by a rerun, scored as one ensemble."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from lightkit.cli import main
from lightkit.data import ImageFolderDataModule
from lightkit.edge import UsageError
from lightkit.ensemble import ensemble_predict
from lightkit.ensemble_fit import (
    AUTO_MAX_TRAIN,
    AUTO_MEMBERS,
    check_ensemble_value,
    ensemble_size,
    member_command,
    split_is_seeded,
    train_size,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
SMALL = ["--model.init_args.encoder=test_resnet", "--model.init_args.pretrained=false", "--trainer.accelerator=cpu",
         "--trainer.max_steps=8", "--trainer.max_epochs=8", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--data.init_args.image_size=16", "--data.init_args.batch_size=8"]


def _digits(root: Path, per_class: int, splits: bool) -> Path:
    digits = load_digits()
    n = 0
    for label in (0, 1, 2):
        idx = np.flatnonzero(digits.target == label)[: per_class]
        for k, i in enumerate(idx):
            part = ("train" if k < per_class - 4 else "val" if k < per_class - 2 else "test") if splits else ""
            folder = root / part / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L").save(folder / f"{n}.png")
            n += 1
    return root


def test_ensemble_value_is_checked() -> None:
    for bad in (0, -2, True, "three", 1.5):
        with pytest.raises(UsageError, match=r"ensemble=.*: give the number of models to train and average"):
            check_ensemble_value(bad)
    for good in (1, 2, 5, "auto"):
        check_ensemble_value(good)


def test_ensemble_size_auto_and_fixed() -> None:
    assert ensemble_size(1, 50, 1) == (1, "")
    assert ensemble_size(4, None, 1) == (4, "")
    count, why = ensemble_size("auto", 160, 1)
    assert count == AUTO_MEMBERS == 3 and "160 training images" in why and "--ensemble 1" in why
    assert ensemble_size("auto", AUTO_MAX_TRAIN, 1)[0] == 3
    assert ensemble_size("auto", AUTO_MAX_TRAIN + 1, 1)[0] == 1
    assert ensemble_size("auto", None, 1)[0] == 1
    count, why = ensemble_size("auto", 100, 8)
    assert count == 1 and "8 processes" in why
    assert ensemble_size(1, 100, 8) == (1, "")
    with pytest.raises(UsageError, match=r"ensemble=2 trains its members one after another .* set trainer.devices=1"):
        ensemble_size(2, 100, 2)


def test_member_command_overrides_come_last() -> None:
    argv = ["fit", "--config", "c.yaml", "--seed_everything", "7", "--ckpt_path", "last", "--run_dir=auto"]
    cmd = member_command(argv, 7, 2, Path("run/member_2"), 7)
    kept = ["fit", "--config", "c.yaml", "--seed_everything", "7", "--run_dir=auto"]  # no parent --ckpt_path
    assert cmd[: len(kept)] == kept
    assert member_command([*argv, "--ckpt_path=x.ckpt"], 7, 2, Path("run/member_2"), 7) == cmd
    tail = cmd[len(kept):]

    def value(flag: str) -> str:
        return tail[len(tail) - 1 - tail[::-1].index(flag) + 1]  # the last occurrence wins in jsonargparse

    assert value("--seed_everything") == "9" and value("--run_dir") == "run/member_2" and value("--ensemble") == "1"
    assert value("--ckpt_path") == "null" and value("--data.init_args.seed") == "7"
    assert value("--test_after_fit") == "false" and value("--pixel_baseline") == "false"
    assert "--data.init_args.seed" not in member_command(argv, 7, 1, Path("m"), None)


def test_split_is_seeded_only_when_the_seed_picks_the_split(tmp_path: Path) -> None:
    flat = ImageFolderDataModule(_digits(tmp_path / "flat", 8, splits=False), image_size=16)
    split = ImageFolderDataModule(_digits(tmp_path / "split", 8, splits=True), image_size=16)
    few = ImageFolderDataModule(tmp_path / "split", image_size=16, samples_per_class=2)
    assert split_is_seeded(flat) and not split_is_seeded(split) and split_is_seeded(few)
    # The rule is the data module's own: the seed moves the train images exactly when it says so.
    for module, root, kw in ((flat, tmp_path / "flat", {}), (split, tmp_path / "split", {}),
                             (few, tmp_path / "split", {"samples_per_class": 2})):
        other = ImageFolderDataModule(root, image_size=16, seed=module.seed + 1, **kw)
        moved = not np.array_equal(module._get_splits()["train"][1], other._get_splits()["train"][1])
        assert moved == split_is_seeded(module)
    assert split_is_seeded(SimpleNamespace(seed=3)) and not split_is_seeded(SimpleNamespace())
    # ensemble: auto counts the train split (8 per class x 3: 6 train + 2 val + 2 test per class in folders).
    assert train_size(split) == 12 and train_size(few) == 6 and train_size(flat) == flat.split_sizes()["train"] > 0

    class Plain:
        def train_dataloader(self):
            return torch.utils.data.DataLoader(list(range(7)))

    class Endless:
        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.IterableDataset())

    assert train_size(Plain()) == 7 and train_size(Endless()) is None


def test_bad_ensemble_values_stop_before_training(tmp_path: Path) -> None:
    data = _digits(tmp_path / "images", 8, splits=True)
    base = ["fit", "--config", str(REPO / "configs/folder.yaml"), f"--data.init_args.root={data}",
            "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", *SMALL]
    with pytest.raises(UsageError, match=r"ensemble=0: give the number of models"):
        main([*base, "--ensemble", "0"])
    one_process = r"ensemble=2 trains its members one after another in one process, .* on 2 processes"
    with pytest.raises(UsageError, match=one_process):
        main([*base, "--ensemble", "2", "--trainer.devices=2", "--trainer.strategy=ddp"])
    assert not list(tmp_path.rglob("*.ckpt"))


def _fit(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_ensemble_fit_trains_scores_reuses_and_resumes_members(tmp_path: Path) -> None:
    data = _digits(tmp_path / "images", 12, splits=True)
    work = tmp_path / "work"
    work.mkdir()
    args = ["--config", str(REPO / "configs/folder.yaml"), "--data.init_args.root", str(data), *SMALL,
            "--seed_everything", "3", "--ensemble", "2", "--run_dir", "run", "--summary_json", "s.json"]
    proc = _fit(work, args)
    summary = json.loads((work / "s.json").read_text())
    members = summary["ensemble/members"]
    assert len(members) == 2 and Path(members[1]).is_relative_to(work / "run" / "member_1")
    assert "ensemble member 2 of 2 (seed 4): training" in proc.stdout
    record = json.loads((work / "run/member_1/member.json").read_text())
    cmd = record["command"]
    assert cmd[len(cmd) - 1 - cmd[::-1].index("--seed_everything") + 1] == "4"  # the last one wins
    assert "--data.init_args.seed" not in record["command"]  # train/val/test folders: the seed picks no split

    # The score is the mean of the two members' softmax on the test split, and each member's own accuracy.
    again = ensemble_predict(members, ImageFolderDataModule(data, image_size=16))
    assert summary["ensemble/test_acc"] == pytest.approx(again.metrics["acc"])
    assert summary["ensemble/member_test_acc"] == pytest.approx([m["acc"] for m in again.member_metrics])
    assert summary["test/acc"] == pytest.approx(again.member_metrics[0]["acc"])
    assert (work / "run/ensemble_test.csv").is_file()
    # The summary's trainer rows are model 1's, and say so; the total holds both fits.
    for label in ("fit time (model 1)", "epochs / optimizer steps (model 1)", "total time (all fits + test)",
                  "checkpoint tested (model 1)"):
        assert label in proc.stdout

    # Member 2 is exactly the fit a user gets with the next seed.
    alone_proc = _fit(work, [*args[:-8], "--seed_everything", "4", "--run_dir", "alone", "--ensemble", "1"])
    assert "total time (fit + test)" in alone_proc.stdout and "(model 1)" not in alone_proc.stdout
    alone = _weights(next((work / "alone/checkpoints").glob("best.ckpt")))
    member = _weights(members[1])
    assert alone.keys() == member.keys() and all(torch.equal(alone[k], member[k]) for k in alone)
    assert not all(torch.equal(member[k], v) for k, v in _weights(members[0]).items())

    # A rerun reuses the finished member; a member killed before it finished resumes from its last.ckpt.
    stamp = Path(members[1]).stat().st_mtime_ns
    proc = _fit(work, [*args, "--ckpt_path", "run/checkpoints/last.ckpt"])
    assert "ensemble member 2 of 2 (seed 4): done before, reused" in proc.stdout
    assert Path(members[1]).stat().st_mtime_ns == stamp
    (work / "run/member_1/member.json").unlink()
    (work / "run/member_1/member_summary.json").unlink()
    proc = _fit(work, [*args, "--ckpt_path", "run/checkpoints/last.ckpt"])
    assert "ensemble member 2 of 2 (seed 4): resuming" in proc.stdout
    assert json.loads((work / "s.json").read_text())["ensemble/test_acc"] == pytest.approx(summary["ensemble/test_acc"])


@pytest.mark.slow
def test_ensemble_members_keep_a_seeded_split(tmp_path: Path) -> None:
    """A flat folder: the seed carves val / test, so every member gets member 1's data seed (no test leak)."""
    data = _digits(tmp_path / "flat", 12, splits=False)
    work = tmp_path / "work"
    work.mkdir()
    proc = _fit(work, ["--config", str(REPO / "configs/folder.yaml"), "--data.init_args.root", str(data), *SMALL,
                       "--seed_everything", "5", "--ensemble", "2", "--run_dir", "run", "--test_after_fit", "false"])
    assert "fit time (model 1)" in proc.stdout and "total time (all fits + test)" in proc.stdout  # scored or not
    record = json.loads((work / "run/member_1/member.json").read_text())
    cmd = record["command"]
    assert cmd[len(cmd) - 1 - cmd[::-1].index("--data.init_args.seed") + 1] == "5"
    saved = yaml.safe_load((work / "run/member_1/config.yaml").read_text())
    assert saved["seed_everything"] == 6 and saved["data"]["init_args"]["seed"] == 5
    # Without the pin the member would have tested on other images (and trained on some of member 1's test images).
    test5 = ImageFolderDataModule(data, image_size=16, seed=5)._get_splits()["test"][1]
    test6 = ImageFolderDataModule(data, image_size=16, seed=6)._get_splits()["test"][1]
    assert not np.array_equal(np.sort(test5), np.sort(test6))
