"""Shared test setup: no test may touch the network, and every test is small enough for 2 CPU cores."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

# Before anything imports huggingface_hub, albumentations or wandb.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "WANDB_MODE": "offline",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_SILENT": "true",
    "GLOO_SOCKET_IFNAME": "lo",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist the cores are shared by the workers: one worker's threads (and those of the processes its
# tests start, through OMP_NUM_THREADS) get their share, so two workers do not each spin two threads on 2 cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _close_open_wandb_run() -> Iterator[None]:
    """A test that fits with a WandbLogger outside the CLI leaves its run open; close it so the next
    test's logger does not write into it (tests/test_search.py checks lightkit copes when one is left)."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish()


@pytest.fixture(autouse=True)
def _no_global_seed_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data modules take their split seed from ``PL_GLOBAL_SEED`` when none is given: a test that
    called ``seed_everything`` must not move the splits of the next test."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
