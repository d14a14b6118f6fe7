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


def test_log_model_offline_warns_and_keeps_checkpoints_on_disk(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"log_model needs an online run; checkpoints stay on disk only"):
        logger = WandbLogger(save_dir=str(tmp_path), offline=True, log_model=True)
    assert logger._log_model is False  # noqa: SLF001 - Lightning's own flag: nothing is uploaded offline


def test_id_continues_a_run_and_no_anonymous_setting(tmp_path: Path) -> None:
    logger = WandbLogger(save_dir=str(tmp_path), id="abc123")
    assert logger._wandb_init["id"] == "abc123" and logger._wandb_init["resume"] == "allow"  # noqa: SLF001
    assert "anonymous" not in logger._wandb_init  # noqa: SLF001 - W&B warns that the setting has no effect
    logger.experiment.finish()
    assert [p.name.rsplit("-", 1)[-1] for p in _offline_runs(tmp_path)] == ["abc123"]


def test_flat_config_lifts_optimizer_and_scheduler() -> None:
    from lightkit.loggers import flat_config

    config = {
        "seed_everything": 0, "config": ["x.yaml"],
        "trainer": {"max_epochs": 5, "logger": [{"class_path": "CSVLogger"}],
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"monitor": "val/loss"}},
                                  {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"filename": "last"}}]},
        "model": {"class_path": "lightkit.models.ImageClassifier", "init_args": {
            "encoder": "resnet10t", "hidden": [256],
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001, "weight_decay": 0.05}},
            "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.01}}}},
        "data": {"class_path": "lightkit.data.DigitsDataModule", "init_args": {"batch_size": 64}},
    }
    flat = flat_config(config, "0.1.0")
    assert flat == {
        "optimizer": "torch.optim.AdamW", "optimizer.lr": 0.001, "optimizer.weight_decay": 0.05,
        "lr_scheduler": "torch.optim.lr_scheduler.OneCycleLR", "lr_scheduler.max_lr": 0.01,
        "model": "lightkit.models.ImageClassifier", "model.encoder": "resnet10t", "model.hidden": "[256]",
        "callbacks.ModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
        "callbacks.ModelCheckpoint.monitor": "val/loss", "trainer.max_epochs": 5,
        "callbacks.ModelCheckpoint_2": "lightning.pytorch.callbacks.ModelCheckpoint",
        "callbacks.ModelCheckpoint_2.filename": "last",
        "seed_everything": 0, "data": "lightkit.data.DigitsDataModule", "data.batch_size": 64,
        "lightkit_version": "0.1.0",
    }
