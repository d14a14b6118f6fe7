"""Every script in examples/ runs (with --fast: seconds) and produces what its docstring promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def _run(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_every_example_is_covered() -> None:
    covered = {"optimizer_paths.py", "own_lightning_module.py", "python_api.py", "multitask.py"}
    assert {p.name for p in EXAMPLES} == covered


@pytest.mark.slow
def test_own_lightning_module_example(tmp_path: Path) -> None:
    proc = _run("own_lightning_module.py", tmp_path, "--fast", "--out", str(tmp_path / "out"))
    out = tmp_path / "out"
    assert (out / "backbone.safetensors").stat().st_size > 1e6 and (out / "lr_find.png").is_file()
    assert {p.name for p in (out / "monitor").iterdir()} >= {"curves.png", "gradients.png"}
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("input,label,probability") and len(rows) == 33
    assert "FineTune: phase 1" in proc.stdout + proc.stderr and "LossCurves:" not in proc.stderr


@pytest.mark.slow
def test_python_api_example(tmp_path: Path) -> None:
    proc = _run("python_api.py", tmp_path, "--fast", "--out", str(tmp_path / "out"))
    assert "test/acc" in proc.stdout and (tmp_path / "out/checkpoints/best.ckpt").is_file()
    assert len((tmp_path / "out/predictions.csv").read_text().splitlines()) > 1


@pytest.mark.slow
def test_multitask_example(tmp_path: Path) -> None:
    proc = _run("multitask.py", tmp_path, "--fast", "--out", str(tmp_path / "out"))
    assert "main-task predictions of 4 test images" in proc.stdout


def test_optimizer_paths_example(tmp_path: Path) -> None:
    _run("optimizer_paths.py", tmp_path, "--out", str(tmp_path / "figures"))
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2
