"""The CLI: every config parses, a short fit on real digits, W&B offline read-back, predict CSV."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightkit.cli import main

REPO = Path(__file__).resolve().parents[1]
# configs/search.yaml is a search config, not a fit config (parsed in tests/test_search.py).
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.name != "search.yaml")
# Overrides that make any config a seconds-long CPU run with a tiny timm model.
TINY = [
    "--model.init_args.encoder=test_resnet",
    "--model.init_args.pretrained=false",
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _quickstart_in(tmp_path: Path) -> str:
    """configs/quickstart.yaml with its loggers writing under tmp_path."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    for logger in config["trainer"]["logger"]:
        logger["init_args"]["save_dir"] = str(tmp_path / "runs")
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _is_fragment(path: Path) -> bool:
    """configs/<sub>/*.yaml are fragments added after a base config (see configs/README.md)."""
    return path.parent != REPO / "configs"


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(REPO / "configs/quickstart.yaml")] if _is_fragment(config) else []
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] and printed["data"]["class_path"]


def test_quickstart_links_data_into_model(tmp_path: Path) -> None:
    cli = main(["--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.hparams.num_classes == 10 and cli.model.hparams.in_chans == 1
    assert cli.model.hparams.class_names == [str(i) for i in range(10)]


def test_limit_batches_one_is_one_batch_even_after_rich_reordered_the_union(tmp_path: Path) -> None:
    """``typing`` caches ``Optional[Union[float, int]]`` (built by rich, which sklearn imports) as
    Lightning's ``Optional[Union[int, float]]``; jsonargparse then parsed ``1`` as ``1.0`` (all batches)."""
    import typing

    from lightkit.cli_checks import int_first_unions

    def planted(limit=1.0, rate=0.1):  # noqa: ANN001, ANN202
        return limit, rate

    planted.__annotations__ = {"limit": float | int | None, "rate": float}  # float first, as the cache can hand it

    assert int_first_unions(planted) == ["limit"] and typing.get_args(planted.__annotations__["limit"])[0] is int
    # The user's order of imports (rich first, as sklearn does), in a fresh interpreter.
    script = ("import rich.console, sys; from lightkit.cli import main; "
              "cli = main(sys.argv[1:], run=False); "
              "print(repr(cli.trainer.limit_train_batches), repr(cli.trainer.limit_val_batches))")
    args = ["--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.logger=false",
            "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0.5",
            f"--trainer.default_root_dir={tmp_path}"]
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1", "0.5"]


def _wandb_summary(run_dir: Path) -> dict:
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_fit_with_wandb_offline_and_test_after_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_dir = tmp_path / "runs"
    main(["fit", "--config", _quickstart_in(tmp_path), *TINY, f"--trainer.default_root_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "lightkit run summary" in out and "test/acc" in out
    runs = list((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    summary = _wandb_summary(runs[0])
    # Config and metrics written by the offline run, read back from its transaction log.
    assert summary["config"]["encoder"] == "test_resnet" and summary["config"]["num_classes"] == 10
    metrics = summary["summary"]
    for key in ("val/loss", "val/acc", "train/loss_epoch", "test/acc", "test/loss"):
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_fit_then_predict_writes_csv(tmp_path: Path) -> None:
    base = ["--config", _quickstart_in(tmp_path), *TINY, f"--trainer.default_root_dir={tmp_path}",
            "--test_after_fit=false"]
    cli = main(["fit", *base])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    assert Path(ckpt).is_file()
    out_csv = tmp_path / "pred.csv"
    main(["predict", *base[:-1], f"--ckpt_path={ckpt}", "--trainer.limit_predict_batches=2",
          "--trainer.callbacks+=lightkit.callbacks.prediction_writer.PredictionWriter",
          f"--trainer.callbacks.output={out_csv}"])
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * 64
    assert rows[0]["input"].startswith("test/") and rows[0]["label"] in [str(i) for i in range(10)]
    assert 0.0 < float(rows[0]["probability"]) <= 1.0 and "top3_label" in rows[0]


def test_plot_schedule_command(tmp_path: Path) -> None:
    out = tmp_path / "schedule.png"
    main(["plot_schedule", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.logger=false",
          f"--plot_schedule.output={out}"])
    assert out.is_file() and out.stat().st_size > 1000


def test_plot_schedule_without_scheduler_fails(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plot_schedule", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.logger=false",
              "--model.init_args.lr_scheduler=null", f"--plot_schedule.output={tmp_path / 'x.png'}"])
    assert exit_info.value.code == 2


def test_bad_config_value_exits_nonzero_with_message() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--config",
                           str(REPO / "configs/quickstart.yaml"),
                           "--model.init_args.label_smoothing=2.0", *TINY, "--trainer.logger=false"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0
    assert "label_smoothing=2.0 must be in [0, 1)" in proc.stderr
