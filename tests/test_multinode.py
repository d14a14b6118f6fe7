"""Two "nodes" of one CPU process each on localhost, launched as on a cluster with ``torchrun --nnodes 2``.

Each node runs the lightkit CLI (``fit`` then ``test_after_fit``) through a three-line script that also
saves its final weights; the test checks both nodes took the same steps to the same weights, that
Lightning saw the torchrun world (2 nodes, global ranks 0 and 1), and that logs, checkpoints and the
run summary come from rank zero only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from tests.helpers.ddp import REPO

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

NODE_SCRIPT = """
import os, sys
import torch
torch.set_num_threads(1)
from lightkit.cli import main
cli = main(sys.argv[1:])
t = cli.trainer
torch.save({"state": cli.model.state_dict(), "world": t.world_size, "num_nodes": t.num_nodes, "node_rank": t.node_rank,
            "global_rank": t.global_rank, "step": t.global_step, "ckpt": t.checkpoint_callback.best_model_path},
           os.path.join(os.environ["LIGHTKIT_TEST_OUT"], f"node{os.environ['GROUP_RANK']}.pt"))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_nodes_torchrun_identical_weights(tmp_path) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp", "max_steps": 3,
                    "limit_val_batches": 2, "limit_test_batches": 2, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path),
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": "csv"}}},
        "model": {"class_path": "lightkit.models.ImageClassifier", "init_args": {"encoder": "test_resnet"}},
        "data": {"class_path": "lightkit.data.DigitsDataModule", "init_args": {"image_size": 32, "batch_size": 16}},
        "test_after_fit": True,
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "node.py").write_text(NODE_SCRIPT)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTKIT_TEST_OUT": str(tmp_path), "GLOO_SOCKET_IFNAME": "lo",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1"}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(key, None)
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
         str(tmp_path / "node.py"), "fit", "--config", str(tmp_path / "tiny.yaml")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=400)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for rank, (node, out) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank} failed ({node.returncode}):\n{out[-5000:]}"
    n0, n1 = (torch.load(tmp_path / f"node{r}.pt", weights_only=False) for r in (0, 1))
    assert (n0["world"], n0["num_nodes"], n0["node_rank"], n0["global_rank"]) == (2, 2, 0, 0)
    assert (n1["world"], n1["num_nodes"], n1["node_rank"], n1["global_rank"]) == (2, 2, 1, 1)
    assert n0["step"] == n1["step"] == 3
    for key, value in n0["state"].items():
        if value.is_floating_point() and "running" not in key:  # BN running stats stay per rank under DDP
            assert torch.equal(value, n1["state"][key]), key
    # rank zero writes: one logger version, one checkpoint (the path both ranks agree on), one summary
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["version_0"]
    assert n0["ckpt"] == n1["ckpt"] and len(list(tmp_path.rglob("*.ckpt"))) == 1
    assert "lightkit run summary" in outputs[0] and "lightkit run summary" not in outputs[1]
