"""``configs/ema.yaml`` and ``configs/snapshot_ensemble.yaml`` parse through the lightkit CLI (patched ``sys.argv``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightkit.callbacks.ema import EMA
from lightkit.callbacks.snapshot import SnapshotEnsemble
from lightkit.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(("name", "kind"), [("ema.yaml", EMA), ("snapshot_ensemble.yaml", SnapshotEnsemble)])
def test_config_parses(name: str, kind: type, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["cli.py", "--config", str(CONFIGS / name), "--trainer.logger", "false",
                                     "--model.init_args.encoder", "test_resnet"])
    cli = main(run=False)
    (callback,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, kind)]
    if kind is EMA:
        assert (callback.decay, callback.validate_with) == (0.995, "both")
    else:
        assert callback.cycles == 4 and cli.model.lr_scheduler_factory is None
