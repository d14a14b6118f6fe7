"""``python cli.py predict`` on a user's folder of images: one CSV row per readable image, bad files reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lightkit.cli import main
from lightkit.data.images import decode_images, normalize, resize_images
from lightkit.edge import UsageError
from lightkit.export import load_classifier

HEADER = ["input", "label", "probability", "top2_label", "top2_probability", "top3_label", "top3_probability"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by `cli.py fit` (one step): the CLI's predict reads the model class from it."""
    root = tmp_path_factory.mktemp("predict_ckpt")
    cli = main(["fit", "--config", _config(root, writer=False), "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0", "--test_after_fit=false"])
    path = Path(cli.trainer.checkpoint_callback.best_model_path or cli.trainer.checkpoint_callback.last_model_path)
    assert path.is_file()
    return path


@pytest.fixture()
def image_dir(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    """Six digit PNGs (one in a subfolder), one corrupt PNG and one non-image file."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "images"
    (root / "more").mkdir(parents=True)
    good = []
    for i in range(6):
        pixels = np.rint(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
        path = root / ("more" if i == 5 else ".") / f"digit_{i}.png"
        Image.fromarray(pixels).save(path)  # 2-D uint8: mode "L"
        good.append(path.resolve())
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (root / "notes.txt").write_text("ignored: not an image")
    return root, sorted(good), bad


def _config(tmp_path: Path, writer: bool) -> str:
    trainer: dict = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                     "enable_model_summary": False, "default_root_dir": str(tmp_path / "run")}
    if writer:
        trainer["callbacks"] = [{"class_path": "lightkit.callbacks.prediction_writer.PredictionWriter",
                                 "init_args": {"output": str(tmp_path / "preds.csv"), "top_k": 3}}]
    config = {
        "seed_everything": 0,
        "trainer": trainer,
        "model": {"class_path": "lightkit.models.ImageClassifier", "init_args": {"encoder": "test_resnet"}},
        "data": {"class_path": "lightkit.data.DigitsDataModule", "init_args": {"batch_size": 4, "image_size": 32}},
    }
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _expected_probs(ckpt: Path, paths: list[Path]) -> torch.Tensor:
    """The checkpoint's model on the files, preprocessed as its metadata says (independent of the CLI)."""
    model, meta = load_classifier(ckpt)
    images, kept, bad = decode_images(paths, meta["input_size"][0])
    assert not bad and kept == list(range(len(paths)))
    x = normalize(resize_images(images, tuple(meta["input_size"][1:]), meta["interpolation"]), meta["mean"],
                  meta["std"])
    with torch.no_grad():
        return model(x).softmax(dim=1)


def _check_csv(csv_path: Path, good: list[Path], bad: Path, ckpt: Path) -> None:
    with csv_path.open(newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == HEADER
        rows = list(reader)
    # Every readable image once, in sorted order; the corrupt file and the .txt are not rows.
    assert [Path(r[0]).resolve() for r in rows] == good
    assert str(bad) not in {r[0] for r in rows}
    expected = _expected_probs(ckpt, good)
    classes = [str(d) for d in range(10)]
    for row, probs in zip(rows, expected, strict=True):
        labels, ps = row[1::2], [float(p) for p in row[2::2]]
        assert all(label in classes for label in labels) and len(set(labels)) == 3
        assert ps == sorted(ps, reverse=True) and 0.0 < ps[-1] <= ps[0] <= 1.0
        top_p, top_i = probs.topk(3)
        assert labels == [classes[int(i)] for i in top_i]
        np.testing.assert_allclose(ps, top_p.numpy(), atol=1e-5)


def test_predict_folder_writes_csv_and_reports_bad_images(
    ckpt: Path, image_dir: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    root, good, bad = image_dir
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: first '.*broken\.png'"):
        cli = main(["predict", "--config", _config(tmp_path, writer=True), "--ckpt_path", str(ckpt),
                    "--data.init_args.predict_path", str(root)])
    assert cli is not None and cli.datamodule.predict_skipped == [str(bad)]
    _check_csv(tmp_path / "preds.csv", good, bad, ckpt)


def test_predict_folder_default_writer(ckpt: Path, image_dir: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    root, good, bad = image_dir
    main(["predict", "--config", _config(tmp_path, writer=False), "--ckpt_path", str(ckpt),
          "--data.init_args.predict_path", str(root)])
    csv_path = tmp_path / "run" / "predictions.csv"
    assert csv_path.is_file(), "no predictions.csv written without a configured PredictionWriter"
    _check_csv(csv_path, good, bad, ckpt)


@pytest.fixture(scope="module")
def second_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another member of the same architecture, fitted outside the CLI (no ``_class_path`` in its hyperparameters)."""
    from tests.helpers.digits_checkpoint import digits_checkpoint

    return digits_checkpoint(tmp_path_factory.mktemp("second_ckpt"))


def test_predict_ckpt_fitted_outside_the_cli(second_ckpt: Path, image_dir: tuple[Path, list[Path], Path],
                                            tmp_path: Path) -> None:
    root, good, bad = image_dir
    main(["predict", "--config", _config(tmp_path, writer=False), "--ckpt_path", str(second_ckpt),
          "--data.init_args.predict_path", str(root)])
    _check_csv(tmp_path / "run" / "predictions.csv", good, bad, second_ckpt)


def test_predict_checkpoint_ensemble(ckpt: Path, second_ckpt: Path, image_dir: tuple[Path, list[Path], Path],
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, good, _ = image_dir
    main(["predict", "--config", _config(tmp_path, writer=False), "--data.init_args.predict_path", str(root),
          "--ensemble_ckpts", f"[{ckpt},{second_ckpt}]"])
    assert not (tmp_path / "run" / "predictions.csv").exists()  # the plain writer is not used
    with (tmp_path / "run" / "ensemble_predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = (_expected_probs(ckpt, good) + _expected_probs(second_ckpt, good)) / 2
    assert [Path(r["input"]).resolve() for r in rows] == good
    top_p, top_i = expected.max(dim=1)
    assert [r["label"] for r in rows] == [str(int(i)) for i in top_i]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], top_p.numpy(), atol=1e-5)
    assert "ensemble of 2 checkpoints, 6 inputs" in capsys.readouterr().out


def test_test_checkpoint_ensemble_scores_members(ckpt: Path, second_ckpt: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    main(["test", "--config", _config(tmp_path, writer=False), "--ensemble_ckpts", f"[{ckpt},{second_ckpt}]"])
    out = capsys.readouterr().out
    assert "ensemble (2)" in out and ckpt.name[-40:] in out
    rows = list(csv.DictReader((tmp_path / "run" / "ensemble_test.csv").open(newline="")))
    from lightkit.data import DigitsDataModule

    data = DigitsDataModule(batch_size=4, image_size=32)
    data.setup("test")
    labels = torch.cat([y for _, y in data.test_dataloader()])
    assert len(rows) == len(labels) > 300  # the whole digits test split, each row once
    assert [r["input"] for r in rows] == [f"test/{i:05d}" for i in range(len(labels))]  # rows in test-split order
    acc = float(np.mean([r["label"] == str(int(y)) for r, y in zip(rows, labels, strict=True)]))
    assert f"{acc:.4f}" in out  # the ensemble row of the table is scored on these labels


def test_test_summary_json_has_the_printed_figures(ckpt: Path, second_ckpt: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # With --ensemble_ckpts: the ensemble's and each member's figures, as the table prints them.
    main(["test", "--config", _config(tmp_path, writer=False), "--ensemble_ckpts", f"[{ckpt},{second_ckpt}]",
          "--summary_json", str(tmp_path / "ens.json")])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "ens.json").read_text())
    assert summary["ensemble/members"] == [str(ckpt), str(second_ckpt)]
    assert len(summary["ensemble/member_test_acc"]) == len(summary["ensemble/member_test_nll"]) == 2
    for value in (summary["ensemble/test_acc"], summary["ensemble/test_nll"], *summary["ensemble/member_test_acc"]):
        assert f"{value:.4f}" in out
    # A plain test: the test metrics and the checkpoint.
    main(["test", "--config", _config(tmp_path, writer=False), "--ckpt_path", str(ckpt),
          "--summary_json", str(tmp_path / "one.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["checkpoint"] == str(ckpt) and one["test/acc"] == pytest.approx(summary["ensemble/member_test_acc"][0],
                                                                              abs=1e-4)


def test_ensemble_ckpts_errors(ckpt: Path, tmp_path: Path, image_dir: tuple[Path, list[Path], Path]) -> None:
    with pytest.raises(UsageError, match=r"--summary_json is written by fit and test; predict writes its predictions"):
        main(["predict", "--config", _config(tmp_path, writer=False), "--data.init_args.predict_path",
              str(image_dir[0]), "--ckpt_path", str(ckpt), "--summary_json", str(tmp_path / "p.json")])
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "run" / "predictions.csv").exists()
    with pytest.raises(ValueError, match="an ensemble needs two or more paths"):
        main(["predict", "--config", _config(tmp_path, writer=False), "--ensemble_ckpts", f"[{ckpt}]"])
    with pytest.raises(ValueError, match=r"do not exist"):
        main(["predict", "--config", _config(tmp_path, writer=False), "--ensemble_ckpts", f"[{ckpt},missing.ckpt]"])
    with pytest.raises(ValueError,
                       match="test --ensemble_ckpts scores the test split; remove data.init_args.predict_path"):
        main(["test", "--config", _config(tmp_path, writer=False), "--ensemble_ckpts", f"[{ckpt},{ckpt}]",
              "--data.init_args.predict_path", str(image_dir[0])])
