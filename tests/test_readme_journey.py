"""The README's tour, run as written: its command block, in order, twice, in one copy of the repository.

Each ``python cli.py ...`` line of the "A tour of the CLI" block runs as a subprocess in a temporary
copy of the working tree (tracked and untracked, not ignored files), with overrides appended that only shrink the budget
(tiny timm encoder, a few batches); every command must exit 0 and write what the README says it writes.
Left out, with the reason: ``search`` (minutes of trials; ``tests/test_search.py`` runs it). The README
and the code cannot drift apart: a renamed option, file or keyword in the README fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
       "WANDB_ERROR_REPORTING": "false"}
ENV.pop("PYTHONPATH", None)  # the copy's own lightkit (cli.py's folder comes first on sys.path)
SMALL = ["--model.init_args.encoder=test_resnet", "--model.init_args.pretrained=false", "--trainer.accelerator=cpu",
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.limit_predict_batches=1", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]
PER_COMMAND = {"lr_find": ["--lr_find.num_steps=5"],
               "sanity": ["--sanity.checks=[initial_loss,gradients]", "--sanity.pixel_baseline=false"]}
SKIPPED = {"search"}


def tour_commands() -> list[list[str]]:
    """The ``python cli.py`` lines of the README's tour block (continuations joined, comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## A tour of the CLI"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the tour has a ```bash block"
    joined = block[1].replace("\\\n", " ")
    return [shlex.split(line, comments=True)[2:] for line in joined.splitlines() if line.startswith("python cli.py")]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _images(folder: Path) -> None:
    from sklearn.datasets import load_digits

    folder.mkdir()
    digits = load_digits()
    for i in range(6):
        Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L").save(folder / f"digit_{i}.png")


def _newest(root: Path) -> Path:
    return max(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def test_readme_commands_are_the_tour() -> None:
    commands = [c[0] for c in tour_commands()]
    assert commands[:4] == ["fit", "fit", "fit", "test"] and {"lr_find", "sanity", "export", "predict"} <= set(commands)


@pytest.mark.slow
def test_readme_tour_runs_twice_in_one_folder(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _copy_tree(clone)
    _images(clone / "my_images")
    runs = clone / "runs"
    for round_ in range(2):
        for args in tour_commands():
            command = args[0]
            if command in SKIPPED:
                continue
            if "--ensemble_ckpts" in args:  # the README's three seeds: copies of the tour's best checkpoint
                for i in range(3):
                    shutil.copy(runs / "quickstart/version_0/checkpoints/best.ckpt", clone / f"seed{i}.ckpt")
            extra = ([*SMALL, *PER_COMMAND.get("sanity" if "--sanity_first" in args else command, [])]
                     if "--config" in args and "--print_config" not in args else [])
            before = {p for p in runs.rglob("version_*")} if runs.exists() else set()
            proc = subprocess.run([sys.executable, "cli.py", *args, *extra], cwd=clone, env=ENV, capture_output=True,
                                  text=True, timeout=900)
            assert proc.returncode == 0, (round_, args, proc.stderr[-3000:])
            assert "Traceback" not in proc.stderr, (args, proc.stderr[-3000:])
            new = {p for p in runs.rglob("version_*")} - before
            name = Path(args[args.index("--config") + 1]).stem if "--config" in args else ""
            if command == "fit" and "--print_config" not in args:
                (run,) = new
                assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
                assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
                assert "run folder" in proc.stdout and str(run.relative_to(clone)) in proc.stdout
                assert (run / "sanity.json").is_file() == ("--sanity_first" in args)
            elif "--print_config" in args:
                assert not new and "model:" in proc.stdout
            elif command == "predict":
                csv = "ensemble_predictions.csv" if "--ensemble_ckpts" in args else "predictions.csv"
                assert (_newest(runs / name) / csv).is_file(), csv
            elif command == "export":
                assert (runs / "quickstart/version_0/checkpoints/best.onnx").is_file()
                assert (runs / "quickstart/version_0/checkpoints/best.onnx.json").is_file()
            else:
                expected = {"plot_schedule": "schedule.png", "lr_find": "lr_find.png", "sanity": "sanity.json",
                            "show_augmentations": "augmentations.png", "test": "config.yaml"}[command]
                assert (_newest(runs / name) / expected).is_file(), (command, expected)
