"""Run a Lightning script under 2-process CPU DDP (gloo) in a subprocess.

Lightning's DDP launcher re-executes ``sys.argv`` for the other ranks, so a DDP fit inside pytest
would re-run pytest. Tests write a small script instead and read back what each rank saved.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRELUDE = '''
import os, sys
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
from lightning.pytorch import Trainer, seed_everything
OUT = {out!r}

def ddp_trainer(**kw):
    kw.setdefault("max_steps", 4)
    return Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=OUT, **kw)

def save_rank(obj, name="rank"):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.save(obj, os.path.join(OUT, f"{{name}}{{rank}}.pt"))
'''


def run_ddp_script(tmp_path: Path, body: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Write ``PRELUDE + body`` to ``tmp_path/ddp_script.py`` and run it; raise with its output on failure.

    The body has ``ddp_trainer(**kw)`` (2 CPU processes, gloo), ``save_rank(obj, name)`` (writes
    ``OUT/<name><rank>.pt``) and ``OUT`` (= ``tmp_path``) available.
    """
    script = tmp_path / "ddp_script.py"
    script.write_text(PRELUDE.format(repo=str(REPO), out=str(tmp_path)) + textwrap.dedent(body))
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"DDP script failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def load_ranks(tmp_path: Path, name: str = "rank") -> list:
    """What ``save_rank(obj, name)`` wrote on rank 0 and rank 1."""
    import torch

    return [torch.load(tmp_path / f"{name}{r}.pt", weights_only=False) for r in (0, 1)]
