"""Shared test setup: no test may touch the network, and every test is small enough for 2 CPU cores."""

from __future__ import annotations

import os

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

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
