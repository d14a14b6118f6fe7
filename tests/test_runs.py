"""Run folders: numbering, ``last`` / ``best`` lookup, the run a checkpoint belongs to, its W&B id."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightkit.runs import find_checkpoint, new_run_dir, run_of_checkpoint, versions, wandb_run_id


def test_new_run_dir_numbers_past_the_highest_and_never_reuses(tmp_path: Path) -> None:
    assert new_run_dir(tmp_path / "runs").name == "version_0"
    (tmp_path / "runs/version_7").mkdir()
    (tmp_path / "runs/notes").mkdir()
    assert new_run_dir(tmp_path / "runs").name == "version_8"
    assert [n for n, _ in versions(tmp_path / "runs")] == [0, 7, 8]


def test_find_checkpoint_takes_the_newest_run_that_has_one(tmp_path: Path) -> None:
    for version, names in ((0, ["best", "last"]), (1, ["last"]), (2, [])):
        folder = tmp_path / f"version_{version}/checkpoints"
        folder.mkdir(parents=True)
        for name in names:
            (folder / f"{name}.ckpt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, "last") == tmp_path / "version_1/checkpoints/last.ckpt"
    assert find_checkpoint(tmp_path, "best") == tmp_path / "version_0/checkpoints/best.ckpt"
    with pytest.raises(FileNotFoundError, match=r"ckpt_path='last': no run under .* has checkpoints/last\.ckpt "
                                                 r"\(0 run folder\(s\) looked at\); save it with"):
        find_checkpoint(tmp_path / "empty", "last")
    with pytest.raises(ValueError, match=r"ckpt_path='newest': the keywords are last, best"):
        find_checkpoint(tmp_path, "newest")


def test_run_of_checkpoint_and_wandb_id(tmp_path: Path) -> None:
    run = tmp_path / "version_3"
    assert run_of_checkpoint(run / "checkpoints/last.ckpt") == run
    assert run_of_checkpoint(tmp_path / "elsewhere/last.ckpt") is None
    assert wandb_run_id(run) is None
    (run / "wandb/offline-run-20260101_120000-abc123").mkdir(parents=True)
    (run / "wandb/offline-run-20260102_120000-abc123").mkdir()
    (run / "wandb/latest-run").mkdir()
    assert wandb_run_id(run) == "abc123"
