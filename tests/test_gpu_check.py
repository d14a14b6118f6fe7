"""benchmarks/gpu_check.sh in its CPU dry run: every arm trains and reports a throughput."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers.ddp import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), "--dry-run", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["model"] == "test_resnet" and result["image_size"] == 32
    arms = result["img_per_s"]
    assert len(arms) == 8 and all(value > 0 for value in arms.values())
    assert {key.split()[0] for key in arms} == {"plain", "lightkit"}
    assert sum("bf16" in key for key in arms) == 4 and sum("channels_last" in key for key in arms) == 4
    assert "lightkit/plain" in proc.stdout


def test_gpu_config_runs_tiny_on_cpu(tmp_path) -> None:
    """configs/gpu.yaml end to end on CPU: bf16-mixed autocast, gradient accumulation, SpeedUp, test after fit."""
    import torch

    from lightkit.callbacks.lr_scaling import LRScaling
    from lightkit.callbacks.speed import SpeedUp
    from lightkit.cli import main

    cli = main(["fit", "--config", str(REPO / "configs/gpu.yaml"), "--trainer.accelerator", "cpu",
                "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                "--trainer.num_sanity_val_steps", "0", f"--trainer.default_root_dir={tmp_path}",
                "--trainer.logger=" + json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                  "init_args": {"save_dir": str(tmp_path)}}),
                "--model.init_args.encoder", "test_resnet", "--model.init_args.pretrained", "false",
                "--data.class_path", "lightkit.data.DigitsDataModule", "--data.init_args.image_size", "32",
                "--data.init_args.batch_size", "8"])
    trainer = cli.trainer
    assert trainer.precision == "bf16-mixed" and trainer.accumulate_grad_batches == 2
    assert trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 4
    assert any(isinstance(cb, SpeedUp) for cb in trainer.callbacks)
    scaling = next(cb for cb in trainer.callbacks if isinstance(cb, LRScaling))  # 8 x 2 = 16 of 256: sqrt(1/16)
    assert scaling.applied == {"global_batch": 16, "scale": 0.25, "rule": "sqrt", "reference_batch": 256,
                               "warmup_steps": 0, "warmup_start": 1.0}
    assert trainer.optimizers[0].param_groups[0]["max_lr"] == pytest.approx(0.001 * 0.25)
    conv = next(m for m in cli.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert "test/acc" in trainer.callback_metrics
