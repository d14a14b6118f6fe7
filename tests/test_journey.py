"""Journeys through the command line as a user walks them: subprocesses of ``python cli.py``.

- a fit killed with SIGKILL mid-epoch, resumed with the documented ``--ckpt_path last``, ends with the
  same weights as a straight run, in the same run folder, CSV log and W&B run id;
- a diverging fit (SGD at LR 1e6) stops at the step, says so in one line, writes no checkpoint from
  diverged weights and exits non-zero when no good checkpoint exists;
- commands in any order, twice, each in its own run folder;
- the W&B run's config holds the optimizer's and the scheduler's values.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
Q = str(REPO / "configs/quickstart.yaml")
TINY = ["--model.init_args.encoder=test_resnet", "--model.init_args.pretrained=false", "--trainer.accelerator=cpu",
        "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "HF_HUB_OFFLINE": "1", "WANDB_ERROR_REPORTING": "false"}

pytestmark = pytest.mark.slow


def _cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=ENV)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkill_mid_epoch_then_resume_last_matches_the_straight_run(tmp_path: Path) -> None:
    fit = ["fit", "--config", Q, *TINY, "--trainer.max_epochs=3", "--test_after_fit=false"]
    straight = _cli([*fit, f"--trainer.default_root_dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    root = tmp_path / "killed"
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), *fit, f"--trainer.default_root_dir={root}",
         "--trainer.callbacks+=tests.helpers.pause_at.PauseAt", "--trainer.callbacks.step=6",
         f"--trainer.callbacks.marker={marker}"],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the fit ended before the kill point"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 1 (4 steps an epoch): last.ckpt is from step 4
    finally:
        proc.wait(timeout=60)
    run = root / "version_0"
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    resumed = _cli([*fit, f"--trainer.default_root_dir={root}", "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == ["version_0"]  # continued in place, no new run folder
    a, b = _weights(tmp_path / "straight/version_0/checkpoints/last.ckpt"), _weights(run / "checkpoints/last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1  # one W&B run, continued
    steps = [row.split(",") for row in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps, "the CSV log of the run folder holds both parts"


def test_diverging_fit_stops_at_the_step_and_exits_non_zero_without_a_good_checkpoint(tmp_path: Path) -> None:
    proc = _cli(["fit", "--config", Q, *TINY, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path}",
                 "--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=1e6",
                 "--model.init_args.lr_scheduler=null"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run diverged at step ") and "before any checkpoint was saved" in last, last
    assert "Diagnose: training loss is nan at step" in proc.stderr
    assert "lightkit run summary" not in proc.stdout  # nothing tested from diverged weights
    assert not list(tmp_path.rglob("*.ckpt"))


def test_divergence_after_a_good_checkpoint_tests_that_checkpoint_and_says_so(tmp_path: Path) -> None:
    proc = _cli(["fit", "--config", Q, *TINY, "--trainer.max_epochs=3", f"--trainer.default_root_dir={tmp_path}",
                 "--trainer.callbacks+=tests.helpers.pause_at.PoisonAt", "--trainer.callbacks.step=6"], REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Diagnose: training loss is nan at step 6; stopping the run now" in proc.stderr
    table = " ".join(proc.stdout.replace("│", " ").split())
    assert "diverged at step 6: stopped there; tested the last good checkpoint (best.ckpt)" in table
    checkpoints = tmp_path / "version_0/checkpoints"
    for path in checkpoints.glob("*.ckpt"):  # all from before the divergence (epoch 0 ended at step 4)
        assert torch.load(path, weights_only=True)["global_step"] == 4, path.name


def test_commands_in_any_order_twice_each_in_its_own_run_folder(tmp_path: Path) -> None:
    common = ["--config", Q, *TINY, f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    sequence = [
        ["fit", *common, "--trainer.max_epochs=2"],
        ["lr_find", *common, "--lr_find.num_steps=5"],
        ["test", *common, "--ckpt_path", "best"],
        ["fit", *common, "--trainer.max_steps=2", "--test_after_fit=false"],  # a smoke run, mid-epoch
        ["test", *common, "--ckpt_path", "last"],
    ]
    for _ in range(2):
        for args in sequence:
            proc = _cli(args, tmp_path)
            assert proc.returncode == 0, (args, proc.stderr[-2000:])
    folders = sorted((tmp_path / "runs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    assert [p.name for p in folders] == [f"version_{i}" for i in range(10)]
    for folder in folders:
        assert (folder / "config.yaml").is_file(), folder
    assert (folders[0] / "checkpoints/best.ckpt").is_file() and (folders[0] / "checkpoints/last.ckpt").is_file()
    assert (folders[1] / "lr_find.png").is_file() and not (folders[1] / "checkpoints").exists()


def test_wandb_config_holds_the_resolved_optimizer_and_scheduler(tmp_path: Path) -> None:
    proc = _cli(["fit", "--config", Q, *TINY, "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path}",
                 "--test_after_fit=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "version_0/wandb").glob("offline-run-*")
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run)], capture_output=True, text=True,
                         timeout=120, check=True)
    config = json.loads(out.stdout)["config"]
    config = {k: (v.get("value", v) if isinstance(v, dict) else v) for k, v in config.items()}
    assert config["optimizer"] == "torch.optim.AdamW" and config["optimizer.lr"] == 0.001
    assert config["optimizer.weight_decay"] == 0.05
    assert config["lr_scheduler"] == "torch.optim.lr_scheduler.OneCycleLR" and config["lr_scheduler.max_lr"] == 0.001
    assert config["trainer.max_steps"] == 2 and config["seed_everything"] == 0 and "lightkit_version" in config
    assert config["callbacks.ModelCheckpoint.monitor"] == "val/loss" and config["model.encoder"] == "test_resnet"
    saved = yaml.safe_load((run / "files/lightkit_config.yaml").read_text())
    assert saved["fit"]["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.001
