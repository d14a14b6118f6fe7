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


def _cfg(tmp_path: Path, ckpt: str | None = None) -> object:
    from jsonargparse import Namespace

    return Namespace(
        run_dir="auto", config=[str(tmp_path / "quickstart.yaml")], ckpt_path=ckpt,
        trainer=Namespace(default_root_dir=None, logger=[
            Namespace(class_path="lightkit.loggers.WandbLogger", init_args=Namespace(save_dir="runs/q", id=None)),
            Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                      init_args=Namespace(save_dir="runs/q", name="x"))],
            callbacks=[Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                                 init_args=Namespace(dirpath=None, filename="best"))]),
    )


def test_place_run_points_every_output_at_the_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkit.runs import place_run

    for key in ("WORLD_SIZE", "SLURM_NTASKS", "LOCAL_RANK", "RANK", "NODE_RANK", "LIGHTKIT_RUN_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    run = place_run(cfg, "fit")
    assert run == Path("runs/q/version_0") and cfg.trainer.default_root_dir == str(run)
    assert [lg.init_args.save_dir for lg in cfg.trainer.logger] == [str(run)] * 2
    assert cfg.trainer.logger[1].init_args.name == "" and cfg.trainer.logger[1].init_args.version == ""
    assert cfg.trainer.callbacks[0].init_args.dirpath == str(run / "checkpoints")
    (run / "checkpoints").mkdir()
    (run / "checkpoints/last.ckpt").write_bytes(b"x")
    (run / "wandb/offline-run-20260101_120000-abc123").mkdir(parents=True)
    resumed = _cfg(tmp_path, "last")
    assert place_run(resumed, "fit") == run  # continues in place, in the same W&B run
    assert (resumed.ckpt_path == str(run / "checkpoints/last.ckpt")
            and resumed.trainer.logger[0].init_args.id == "abc123")
    tested = _cfg(tmp_path, "last")
    assert place_run(tested, "test") == Path("runs/q/version_1") and tested.trainer.callbacks == []  # no checkpoints


def test_place_run_under_torchrun_and_in_a_ddp_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkit.runs import place_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun / SLURM: every rank starts at once and uses the root
    assert place_run(_cfg(tmp_path), "fit") == Path("runs/q")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank Lightning's launcher started: the folder rank zero chose
    monkeypatch.setenv("LIGHTKIT_RUN_DIR", str(tmp_path / "chosen"))
    assert place_run(_cfg(tmp_path), "fit") == tmp_path / "chosen"


def test_a_runs_saved_config_starts_a_new_run_next_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkit.runs import place_run

    for key in ("WORLD_SIZE", "SLURM_NTASKS", "LOCAL_RANK", "RANK", "NODE_RANK", "LIGHTKIT_RUN_DIR"):
        monkeypatch.delenv(key, raising=False)
    cfg = _cfg(tmp_path)
    cfg.trainer.default_root_dir = str(tmp_path / "runs/q/version_0")  # as runs/q/version_0/config.yaml says
    (tmp_path / "runs/q/version_0").mkdir(parents=True)
    cfg.trainer.callbacks[0].init_args.dirpath = str(tmp_path / "runs/q/version_0/checkpoints")
    run = place_run(cfg, "fit")
    assert (run == tmp_path / "runs/q/version_1"
            and cfg.trainer.callbacks[0].init_args.dirpath == str(run / "checkpoints"))
