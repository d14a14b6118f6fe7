"""The user's own data: pixel baseline, relative weights paths, and the folder recipe end to end."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from lightkit.baseline import PixelBaseline, below_baseline_message, pixel_baseline
from lightkit.cli import main
from lightkit.data import DigitsDataModule, ImageFolderDataModule
from lightkit.models.weights import PretrainedWeightsError

REPO = Path(__file__).resolve().parents[1]


def test_pixel_baseline_on_digits_is_a_real_floor() -> None:
    dm = DigitsDataModule()
    result = pixel_baseline(dm, size=16)
    assert result.size == 8  # never upsampled above the images' own 8x8
    assert result.n_test == dm.split_sizes()["test"] and result.n_train == dm.split_sizes()["train"]
    assert 0.93 <= result.test_acc <= 1.0  # logistic regression on digits pixels: ~0.96
    assert result.C in (0.01, 0.1, 1.0, 10.0) and result.val_acc is not None


def test_pixel_baseline_uses_the_few_shot_split() -> None:
    result = pixel_baseline(DigitsDataModule(samples_per_class=3))
    assert result.n_train == 30 and result.test_acc < 0.95


def test_pixel_baseline_errors() -> None:
    with pytest.raises(ValueError, match=r"size=0 must be >= 1"):
        pixel_baseline(DigitsDataModule(), size=0)
    with pytest.raises(ValueError, match=r"object has no image splits"):
        pixel_baseline(object())


def test_pixel_baseline_on_a_streaming_folder_equals_in_memory_and_caps_the_held_out_images(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large folder streams: the floor reads each chosen file once, keeps only its pooled pixels, and
    scores at most ``max_eval`` validation / test images (issue 20: no decode of every held-out file)."""
    from lightkit.data import images

    data = _write_digit_folder(tmp_path / "images", 40)
    kwargs = dict(root=str(data), image_size=16, channels=1)
    memory = pixel_baseline(ImageFolderDataModule(in_memory=True, **kwargs))
    reads: list[str] = []
    decode = images.decode_image
    monkeypatch.setattr(images, "decode_image",
                        lambda path, channels, draft=None: reads.append(path) or decode(path, channels, draft))
    streamed = pixel_baseline(ImageFolderDataModule(in_memory=False, **kwargs))
    assert (streamed.test_acc, streamed.val_acc, streamed.C, streamed.size) == \
        (memory.test_acc, memory.val_acc, memory.C, memory.size) and memory.size == 8
    assert len(reads) == len(set(reads)) == 120  # train + val + test of 3 x 40 images, each read once
    capped = pixel_baseline(ImageFolderDataModule(in_memory=False, **kwargs), max_eval=5)
    assert capped.n_test == 5 and capped.n_train == streamed.n_train and streamed.n_test > 5
    with pytest.raises(ValueError, match=r"max_eval=1 >= 2"):
        pixel_baseline(ImageFolderDataModule(in_memory=False, **kwargs), max_eval=1)


def test_pixel_baseline_on_a_streaming_jpeg_folder_decodes_at_reduced_scale(tmp_path: Path) -> None:
    """JPEGs of a streaming folder are decoded with PIL's draft (1/2..1/8 scale, sides >= 16): the floor is
    the in-memory floor within a few points, from far fewer decoded pixels."""
    data = _write_digit_folder(tmp_path / "images", 40)
    for path in sorted(data.rglob("*.png")):
        Image.open(path).resize((128, 128), Image.BILINEAR).save(path.with_suffix(".jpg"), quality=95)
        path.unlink()
    kwargs = dict(root=str(data), image_size=16, channels=1)
    memory = pixel_baseline(ImageFolderDataModule(in_memory=True, **kwargs))
    streamed = pixel_baseline(ImageFolderDataModule(in_memory=False, **kwargs))
    assert memory.size == streamed.size == 16 and memory.n_test == streamed.n_test
    assert abs(memory.test_acc - streamed.test_acc) <= 0.1 and streamed.test_acc > 0.8


def test_pixel_baseline_leaves_out_truncated_jpegs_as_training_does(tmp_path: Path) -> None:
    """A truncated JPEG passes the header scan and fails only when decoded: with ``on_bad_image: skip`` the
    floor leaves it out (as training does) and counts it; with ``error`` it stops, naming the file."""
    from lightkit.data.errors import BadImageError

    data = _write_digit_folder(tmp_path / "images", 30)
    for path in sorted(data.rglob("*.png")):
        Image.open(path).resize((64, 64), Image.BILINEAR).save(path.with_suffix(".jpg"), quality=95)
        path.unlink()
    bad = sorted(data.rglob("*.jpg"))[::40]
    for path in bad:
        path.write_bytes(path.read_bytes()[:400])
    kwargs = dict(root=str(data), image_size=16, channels=1, in_memory=False)
    result = pixel_baseline(ImageFolderDataModule(on_bad_image="skip", **kwargs))
    assert result.skipped == len(bad) == 3 and result.test_acc > 0.8
    assert result.n_train + result.n_test + len(bad) <= 90
    with pytest.raises(BadImageError, match=r"unreadable image .*\.jpg"):
        pixel_baseline(ImageFolderDataModule(on_bad_image="error", **kwargs))


def test_pixel_baseline_on_images_of_several_sizes_uses_the_smallest_side(tmp_path: Path) -> None:
    data = _write_digit_folder(tmp_path / "images", 30)
    for i, path in enumerate(sorted(data.rglob("*.png"))):  # a third of the images 12x12, the rest 24x24
        side = 12 if i % 3 == 0 else 24
        Image.open(path).resize((side, side), Image.BILINEAR).save(path)
    result = pixel_baseline(ImageFolderDataModule(root=str(data), image_size=16, channels=1, in_memory=False))
    assert result.size == 12 and result.test_acc > 0.8


def test_below_baseline_on_a_test_subset_needs_more_than_sampling_noise() -> None:
    """The baseline scored 2,000 of 10,000 test images: 0.4 points below it is noise (2 SE = 2.2 points)."""
    subset = PixelBaseline(test_acc=0.409, val_acc=None, C=1.0, size=16, n_train=5000, n_test=2000, seconds=1.0,
                           n_test_total=10000)
    assert below_baseline_message(0.405, subset) is None
    assert below_baseline_message(0.38, subset) is not None
    whole = PixelBaseline(test_acc=0.409, val_acc=None, C=1.0, size=16, n_train=5000, n_test=2000, seconds=1.0)
    assert below_baseline_message(0.405, whole) is not None


def test_a_tiny_held_out_image_does_not_shrink_the_baseline(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for split, count in (("train", 20), ("val", 5), ("test", 10)):
        _write_digit_folder(root / split, count)
    Image.fromarray(np.zeros((2, 40), dtype=np.uint8), mode="L").save(root / "test" / "0" / "banner.png")
    result = pixel_baseline(ImageFolderDataModule(root=str(root), image_size=16, channels=1, in_memory=False))
    assert result.size == 8 and result.n_test == 31 and result.n_test_total is None


def test_below_baseline_message_names_both_figures() -> None:
    baseline = PixelBaseline(test_acc=0.95, val_acc=0.9, C=1.0, size=16, n_train=100, n_test=40, seconds=0.1)
    message = below_baseline_message(0.5, baseline, steps=15)
    assert message is not None and "50.00 % is below logistic regression on 16x16 pixels (95.00 %)" in message
    assert "too few optimizer steps (15)" in message
    assert below_baseline_message(0.96, baseline) is None


def _write_digit_folder(root: Path, per_class: int, classes: tuple[int, ...] = (0, 1, 2)) -> Path:
    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)
    for c in classes:
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.target == c)[:per_class]:
            Image.fromarray(images[i], mode="L").save(folder / f"{i}.png")
    return root


def test_relative_weights_path_resolves_next_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "weights").mkdir(parents=True)
    source = timm.create_model("test_resnet", num_classes=0, in_chans=1)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(project / "weights" / "w.safetensors"))
    data = _write_digit_folder(tmp_path / "images", 6)
    config = project / "my.yaml"
    config.write_text(
        "model:\n  class_path: lightkit.models.ImageClassifier\n  init_args:\n    encoder: test_resnet\n"
        "    pretrained: weights/w.safetensors\n"
        f"data:\n  class_path: lightkit.data.ImageFolderDataModule\n  init_args:\n    root: {data}\n"
        "    image_size: 16\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the user runs from another folder
    cli = main(["--config", str(config), "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"],
               run=False)
    assert cli.model.encoder.lightkit_pretrained_source == str(project / "weights" / "w.safetensors")
    assert cli.model.hparams.in_chans == 1  # gray PNGs: one channel, linked into the model

    # the same path as the 1-channel entry of a mapping of weights by channels
    mapping = "pretrained: {1: weights/w.safetensors, 3: lightkit:mnist5k_resnet10t}"
    config.write_text(config.read_text().replace("pretrained: weights/w.safetensors", mapping))
    cli = main(["--config", str(config), "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"],
               run=False)
    assert cli.model.encoder.lightkit_pretrained_source == str(project / "weights" / "w.safetensors")
    chosen = {int(k): v for k, v in cli.model.hparams.pretrained.items()}  # the parser may keep the keys as text
    assert chosen == {1: str(project / "weights" / "w.safetensors"), 3: "lightkit:mnist5k_resnet10t"}

    config.write_text(config.read_text().replace("weights/w.safetensors", "weights/missing.safetensors"))
    with pytest.raises(PretrainedWeightsError, match=r"'weights/missing.safetensors': no such file next to the config"):
        main(["--config", str(config), "--trainer.logger=false"], run=False)


def test_gray_folder_meets_the_one_channel_packaged_encoder(tmp_path: Path) -> None:
    data = _write_digit_folder(tmp_path / "images", 4)
    cli = main(["--config", str(REPO / "configs/folder.yaml"), f"--data.init_args.root={data}",
                "--trainer.logger=false"], run=False)
    assert isinstance(cli.datamodule, ImageFolderDataModule) and cli.datamodule.in_chans == 1
    assert cli.model.encoder.conv1[0].weight.shape[1] == 1
    # gray data takes the mapping's 1-channel entry: the encoder pretrained longer on gray digits
    assert cli.model.encoder.lightkit_pretrained_source.endswith("mnist5k_resnet10t_aug20.safetensors")


def test_colour_folder_takes_the_recipes_three_channel_encoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / c / f"{i}.png")
    cli = main(["--config", str(REPO / "configs/folder.yaml"), f"--data.init_args.root={tmp_path / 'images'}",
                "--trainer.logger=false"], run=False)
    assert cli.datamodule.in_chans == 3
    assert cli.model.encoder.lightkit_pretrained_source.endswith("/mnist5k_resnet10t.safetensors")
    # one value on the command line replaces the mapping (the README's switch to other weights)
    cli = main(["--config", str(REPO / "configs/folder.yaml"), f"--data.init_args.root={tmp_path / 'images'}",
                "--trainer.logger=false", "--model.init_args.pretrained=lightkit:mnist5k_resnet10t_aug20"], run=False)
    assert cli.model.encoder.lightkit_pretrained_source.endswith("mnist5k_resnet10t_aug20.safetensors")


@pytest.mark.slow
def test_folder_recipe_runs_from_another_folder(tmp_path: Path) -> None:
    """The README's user-data command on a tiny folder, from another working directory, as a user runs it."""
    data = _write_digit_folder(tmp_path / "my_images", 12)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "fit", "--config", str(REPO / "configs/folder.yaml"),
         "--data.init_args.root", str(data), "--trainer.max_steps", "40", "--trainer.max_epochs", "40",
         "--summary_json", "summary.json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert 0.0 <= summary["test/acc"] <= 1.0 and 0.0 < summary["baseline/pixel_logreg_acc"] <= 1.0
    assert summary["steps"] == 40
    ckpt = Path(summary["checkpoint"])  # the run folder lives under the working directory, not the repository
    assert ckpt.is_file() and ckpt.is_relative_to((work / "runs" / "folder").resolve())
    assert "pixel baseline (logistic regression" in proc.stdout
    # ensemble: auto on 36 images (about 25 in train): three models, members 2-3 in the run folder, ensemble scored.
    found = re.search(r"ensemble auto: (\d+) training images", proc.stdout)  # the 70 % train split of 36
    assert found and 20 <= int(found.group(1)) <= 30 and len(summary["ensemble/members"]) == 3
    assert all(Path(p).is_file() for p in summary["ensemble/members"]) and 0.0 <= summary["ensemble/test_acc"] <= 1.0
    assert (ckpt.parent.parent / "member_2" / "member.json").is_file()


def test_fit_below_the_pixel_baseline_says_so(tmp_path: Path) -> None:
    """A planted failure (LR 0: the network stays at chance) must be reported against the baseline."""
    args = ["fit", "--model", "lightkit.models.ImageClassifier", "--model.init_args.encoder", "test_resnet",
            "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.init_args.lr", "0",
            "--data", "lightkit.data.DigitsDataModule", "--data.init_args.image_size", "16",
            "--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            f"--trainer.default_root_dir={tmp_path}", "--pixel_baseline", "true",
            "--summary_json", str(tmp_path / "s.json")]
    with pytest.warns(UserWarning) as record:
        main(args)
    messages = [str(w.message) for w in record]
    assert any("this fit will take only 2 optimizer steps" in m for m in messages)
    assert any("is below logistic regression on 8x8 pixels" in m for m in messages)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["test/acc"] < summary["baseline/pixel_logreg_acc"]
    assert summary["steps"] == 2 and any("below logistic regression" in v for v in summary["verdicts"])


def test_testing_an_earlier_best_checkpoint_keeps_the_fits_history(tmp_path: Path) -> None:
    """The test after fit restores callback state from the best checkpoint; the verdicts must still read
    the whole fit (a best checkpoint from epoch 0 once made a falling curve look 'still improving')."""
    cli = main(["fit", "--model", "lightkit.models.ImageClassifier", "--model.init_args.encoder", "test_resnet",
                "--data", "lightkit.data.DigitsDataModule", "--data.init_args.image_size", "16",
                "--data.init_args.samples_per_class", "3", "--trainer.max_epochs", "3",
                "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.monitor=val/loss", "--trainer.callbacks.mode=max",  # best = an early epoch
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                f"--trainer.default_root_dir={tmp_path}"])
    from lightkit.callbacks.budget import TrainingBudget

    budget = next(cb for cb in cli.trainer.callbacks if isinstance(cb, TrainingBudget))
    assert len(budget.history) == 3
    assert "epoch=2" not in cli.trainer.checkpoint_callback.best_model_path or budget.history[-1] >= max(budget.history)


# -- flips: auto ------------------------------------------------------------------------------------
def _write_photo_folder(root: Path, per_class: int = 80) -> Path:
    """24 px gray patches of scikit-learn's two sample photos (china, flower): a mirrored patch of a photo is
    still a patch of that photo."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    for name, image in zip(("china", "flower"), load_sample_images().images, strict=True):
        gray = np.asarray(Image.fromarray(image).convert("L"))
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            y, x = rng.integers(0, gray.shape[0] - 24), rng.integers(0, gray.shape[1] - 24)
            Image.fromarray(gray[y:y + 24, x:x + 24]).save(root / name / f"{i}.png")
    return root


def _write_noise_folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for c, n in counts.items():  # labels unrelated to the pixels: nothing to judge mirroring by
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), mode="L").save(root / c / f"{i}.png")
    return root


def test_flips_auto_is_off_for_digits_and_on_for_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """``flips: auto`` decides once, from train and validation images, when first needed: digits lose most
    of a linear model's skill when mirrored (off), photo patches keep it (on); the train augmentation follows."""
    import logging

    from lightkit import baseline

    calls: list[int] = []
    real = baseline.mirror_test
    monkeypatch.setattr(baseline, "mirror_test", lambda dm, **kw: calls.append(1) or real(dm, **kw))
    kwargs = dict(image_size=16, flips="auto", augmentations="standard", channels=1)
    digits = ImageFolderDataModule(root=str(_write_digit_folder(tmp_path / "digits", 60, tuple(range(10)))), **kwargs)
    photos = ImageFolderDataModule(root=str(_write_photo_folder(tmp_path / "photos")), **kwargs)
    assert calls == []  # nothing decided (or decoded) at construction
    with caplog.at_level(logging.INFO):
        assert digits.flips_preserve_label is False and photos.flips_preserve_label is True
        assert digits.flips_preserve_label is False  # decided once
    assert len(calls) == 2
    assert digits.flips_decision.kept < baseline.MIRROR_KEPT <= photos.flips_decision.kept
    assert digits.flips_decision.plain > 0.8 and photos.flips_decision.plain > 0.65
    assert "flips: auto -> off: a linear model on pixels keeps" in caplog.text
    assert "flips: auto -> on" in caplog.text
    for dm, expected in ((digits, False), (photos, True)):
        dm.setup("fit")
        names = [type(t).__name__ for t in dm._train_transform().transforms]
        assert ("HorizontalFlip" in names) is expected


def test_flips_auto_skewed_or_tiny_classes(tmp_path: Path) -> None:
    """Skill is balanced accuracy: a skewed folder of noise, or of digits, does not pass for mirror-proof
    (plain accuracy would: the largest class survives the mirror). A class with one image is left out of
    the test, not a reason to skip it; with fewer than two classes left, the line says why."""
    from lightkit.baseline import mirror_test

    noise = mirror_test(ImageFolderDataModule(root=str(_write_noise_folder(tmp_path / "noise", {"a": 180, "b": 20})),
                                              channels=1))
    assert noise.flips is False and noise.kept is None and noise.plain < 0.6
    skewed = tmp_path / "skewed"
    _write_digit_folder(skewed, 170, (3,))
    _write_digit_folder(skewed, 12, (5,))
    decision = mirror_test(ImageFolderDataModule(root=str(skewed), channels=1))
    assert decision.flips is False and decision.kept is not None and decision.kept < 0.65
    tiny = _write_digit_folder(tmp_path / "tiny", 60, tuple(range(9)))
    _write_digit_folder(tiny, 1, (9,))  # one image of 9: left out, the other nine classes judged
    decision = mirror_test(ImageFolderDataModule(root=str(tiny), channels=1, val_fraction=0.0, test_fraction=0.0))
    assert decision.reason is None and decision.chance == pytest.approx(1 / 9) and decision.flips is False
    one = _write_digit_folder(tmp_path / "one", 30, (4,))
    _write_digit_folder(one, 1, (7,))
    decision = mirror_test(ImageFolderDataModule(root=str(one), channels=1, val_fraction=0.0, test_fraction=0.0))
    assert decision.flips is False and decision.reason is not None
    assert "with fewer than 2 images (7)" in decision.describe() and "flips stay off" in decision.describe()


def test_flips_auto_decision_is_kept_in_checkpoints_and_falls_back_off(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision travels in the data module's state (a checkpoint): test / predict / resume reuse it
    without reading the train images; when they cannot be read, flips are off with a warning that says
    how to choose; an explicit flip under an "off" decision names that decision."""
    from lightkit import baseline
    from lightkit.data.errors import BadImageError

    root = str(_write_digit_folder(tmp_path / "digits", 40, tuple(range(10))))
    fitted = ImageFolderDataModule(root=root, channels=1, flips="auto")
    assert fitted.flips_preserve_label is False
    state = fitted.state_dict()
    assert state["flips_decision"]["kept"] == fitted.flips_decision.kept
    assert ImageFolderDataModule(root=root, channels=1, flips=False).state_dict() == {}

    def unreadable(dm, **kw):
        raise BadImageError("ImageFolderDataModule: unreadable image 'x.png'")

    monkeypatch.setattr(baseline, "mirror_test", unreadable)
    restored = ImageFolderDataModule(root=root, channels=1, flips="auto")
    restored.load_state_dict(state)
    assert restored.flips_preserve_label is False and restored.flips_decision.kept == fitted.flips_decision.kept
    lost = ImageFolderDataModule(root=root, channels=1, flips="auto")
    with pytest.warns(UserWarning, match=r"flips: auto -> off: the train and validation images could not be "
                                         r"read \(ImageFolderDataModule: unreadable image 'x.png'\).*set flips: "
                                         r"true or false"):
        assert lost.flips_preserve_label is False
    monkeypatch.undo()
    # the decision holds Python scalars: a checkpoint with it loads with torch.load(weights_only=True)
    assert type(state["flips_decision"]["flips"]) is bool and type(state["flips_decision"]["plain"]) is float
    buffer = io.BytesIO()
    torch.save({"ImageFolderDataModule": state}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["ImageFolderDataModule"] == state
    # a resumed fit builds its train split in setup, before Lightning restores the state: a saved decision
    # that differs rebuilds it, so the fit goes on with the augmentation it started with
    resumed = ImageFolderDataModule(root=root, channels=1, flips="auto", augmentations="standard")
    resumed.setup("fit")
    flips_in = lambda dm: "HorizontalFlip" in [type(t).__name__ for t in dm._dataset("train").transform.transforms]  # noqa: E731
    assert flips_in(resumed) is False
    resumed.load_state_dict({"flips_decision": {**state["flips_decision"], "flips": True, "added_later": 1}})
    assert resumed.flips_preserve_label is True and flips_in(resumed) is True
    explicit = ImageFolderDataModule(root=root, channels=1, flips="auto", augmentations=[{"name": "hflip"}])
    explicit.setup("fit")
    with pytest.warns(UserWarning, match=r"flips: auto decided off; set flips: true if mirrored images keep the label"):
        explicit._train_transform()


def test_mirror_subset_is_stratified_and_capped() -> None:
    from lightkit.baseline import _stratified_subset

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), [900] + [20] * 9)  # one large class, nine small
    idx = np.arange(len(labels))
    sub = _stratified_subset(labels, idx, 500, rng)
    counts = np.bincount(labels[sub], minlength=10)
    assert 495 <= len(sub) <= 510 and len(np.unique(sub)) == len(sub) and np.all(np.diff(sub) > 0)
    assert counts[0] == 417 and np.all(counts[1:] == 9)  # in proportion (900 and 20 of 1,080 -> of 500)
    many = np.repeat(np.arange(5749), 2)  # more classes than the cap allows at 2 each: a seeded half-cap of them
    sub = _stratified_subset(many, np.arange(len(many)), 1000, rng)
    assert len(sub) == 1000 and np.all(np.bincount(many[sub])[np.unique(many[sub])] == 2)
    assert np.array_equal(_stratified_subset(labels, idx[:300], 500, rng), idx[:300])  # under the cap: all


def test_flips_auto_near_chance_stays_off_and_bad_values_are_refused(tmp_path: Path) -> None:
    from lightkit.baseline import mirror_test
    from lightkit.data.errors import DataError

    dm = ImageFolderDataModule(root=str(_write_noise_folder(tmp_path / "noise", {"a": 40, "b": 40})), flips="auto",
                               channels=1)
    decision = mirror_test(dm)
    assert decision.kept is None and decision.flips is False and "cannot be judged" in decision.describe()
    assert dm.flips_preserve_label is False
    with pytest.raises(DataError, match=r"flips='maybe'; use true .* or auto"):
        ImageFolderDataModule(root=str(tmp_path / "noise"), flips="maybe")
