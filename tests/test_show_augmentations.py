"""``python cli.py show_augmentations``: the PNG grid from a config, its size in pixels, W&B offline, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightkit.cli import main
from lightkit.data.preview import HEADER

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/regularized.yaml")
# The grid only needs the data at the config's size; a tiny model keeps the build fast.
FAST = ["--model.init_args.encoder=test_resnet", "--model.init_args.pretrained=false", "--trainer.accelerator=cpu"]


def _run(tmp_path: Path, *extra: str, config: str = CONFIG) -> None:
    main(["show_augmentations", "--config", config, *FAST, "--trainer.logger=false",
          f"--trainer.default_root_dir={tmp_path}", *extra])


def test_grid_png_has_the_right_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.png"
    _run(tmp_path, "--show_augmentations.samples=3", "--show_augmentations.views=4", "--show_augmentations.cell=32",
         f"--show_augmentations.output={out}")
    # 3 rows x (original + 4 views) of 32 px cells, 2 px gaps, a 96 px label margin and the title strip.
    image = Image.open(out)
    assert image.size == (96 + 5 * 34 + 2, HEADER + 3 * 34 + 2) == (268, 118)
    assert capsys.readouterr().out.strip().endswith(f"3 rows x 5 columns (custom list, fill constant) -> {out}")
    pixels = np.asarray(image.convert("L"))
    top = HEADER + 2
    first = pixels[top:top + 32, 96 + 2: 96 + 34]
    assert first.max() > 100 and first.min() < 50  # a digit (bright on black), not blank


def test_one_row_per_fill_mode_in_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, "--show_augmentations.samples=2", "--show_augmentations.views=2", "--show_augmentations.cell=16",
         "--show_augmentations.fill_modes=true")
    out = tmp_path / "augmentations.png"  # default: <run folder>/augmentations.png
    assert Image.open(out).size == (96 + 3 * 18 + 2, HEADER + 2 * 5 * 18 + 2)
    assert "10 rows x 3 columns (custom list, fill all modes)" in capsys.readouterr().out


@pytest.mark.slow
def test_grid_logged_to_wandb_offline(tmp_path: Path) -> None:
    config = yaml.safe_load(Path(CONFIG).read_text())
    config["trainer"]["logger"] = {"class_path": "lightkit.loggers.WandbLogger",
                                   "init_args": {"project": "lightkit", "name": "aug", "save_dir": str(tmp_path)}}
    path = tmp_path / "regularized.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["show_augmentations", "--config", str(path), *FAST, "--show_augmentations.samples=2",
          "--show_augmentations.views=2", f"--show_augmentations.output={tmp_path / 'grid.png'}"])
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (logged,) = (run / "files" / "media" / "images").glob("augmentations_*.png")
    assert Image.open(logged).size == Image.open(tmp_path / "grid.png").size


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--show_augmentations.views=0"],
         "show_augmentations: views=0 must be >= 1; set --show_augmentations.views (default 6)."),
        (["--show_augmentations.cell=4"],
         "show_augmentations: cell=4 must be >= 8; set --show_augmentations.cell (default 64)."),
        (["--data.init_args.augmentations=null"],
         "show_augmentations: DigitsDataModule has augmentations=None, nothing to show; set "
         "data.init_args.augmentations to a preset (light, standard, strong) or a list."),
    ],
)
def test_bad_option_exits_nonzero_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, *extra)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not (tmp_path / "augmentations.png").exists()


def test_samples_cover_distinct_classes_first() -> None:
    from lightkit.commands.show_augmentations import _choose

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    chosen = _choose(labels, 3, seed=0)
    assert sorted(labels[chosen].tolist()) == [0, 1, 2]
    everything = _choose(labels, 20, seed=1)
    assert sorted(everything) == list(range(8)) and sorted(labels[everything[:3]].tolist()) == [0, 1, 2]
