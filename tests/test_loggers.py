"""lightkit's WandbLogger: offline by default, and one run per logger when asked (search trials)."""

from __future__ import annotations

from pathlib import Path

import pytest
import wandb

from lightkit.loggers import WandbLogger


def _offline_runs(folder: Path) -> list[Path]:
    return sorted((folder / "wandb").glob("offline-run-*"))


def test_offline_by_default(tmp_path: Path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), name="plain")
    logger.experiment.log({"x": 1.0})
    logger.experiment.finish()
    (run,) = _offline_runs(tmp_path)
    assert list(run.glob("run-*.wandb"))


def test_open_run_is_reused_by_default(tmp_path: Path) -> None:
    leaked = wandb.init(project="lightkit", name="leaked", dir=str(tmp_path / "leaked"), mode="offline")
    try:
        with pytest.warns(UserWarning, match="already in progress"):
            logger = WandbLogger(save_dir=str(tmp_path / "mine"), name="mine")
            assert logger.experiment is leaked
    finally:
        leaked.finish()
    assert not _offline_runs(tmp_path / "mine")


def test_open_run_is_finished_when_reuse_is_off(tmp_path: Path) -> None:
    leaked = wandb.init(project="lightkit", name="leaked", dir=str(tmp_path / "leaked"), mode="offline")
    logger = WandbLogger(save_dir=str(tmp_path / "mine"), name="mine", reuse_active_run=False)
    with pytest.warns(UserWarning, match=r"W&B run 'leaked' was still open; it is finished .*'mine'"):
        run = logger.experiment
    assert run is not leaked and run.name == "mine" and wandb.run is run
    run.log({"x": 2.0})
    run.finish()
    assert len(_offline_runs(tmp_path / "leaked")) == 1 and len(_offline_runs(tmp_path / "mine")) == 1
