"""TrainingBudget in a fit: the epoch floor, the too-short warning, the verdicts, resume state."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lightkit.callbacks.budget import TrainingBudget
from lightkit.data import DigitsDataModule
from tests.helpers.tiny_fit import tiny_model


def _fit(tmp_path: Path, budget: TrainingBudget, **trainer_kwargs: object) -> Trainer:
    dm = DigitsDataModule(batch_size=16, image_size=32, samples_per_class=2)  # 20 images: 2 steps per epoch
    trainer = Trainer(logger=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[budget],
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, limit_val_batches=1, **trainer_kwargs)
    trainer.fit(tiny_model(), datamodule=dm)
    return trainer


def test_min_steps_raises_the_epoch_budget_and_warns_when_still_short(tmp_path: Path) -> None:
    budget = TrainingBudget(min_steps=8, warn_below=10)
    with pytest.warns(UserWarning, match=r"this fit will take only 8 optimizer steps \(2 per epoch: 20 train images"):
        trainer = _fit(tmp_path, budget, max_epochs=1)
    assert budget.planned_steps == 8
    assert trainer.global_step == 8 and trainer.current_epoch == 4


def test_many_short_epochs_validate_every_kth(tmp_path: Path) -> None:
    budget = TrainingBudget(min_steps=18, warn_below=0, max_validations=3)
    trainer = _fit(tmp_path, budget, max_epochs=1)
    # 9 epochs of 2 steps, validated every 3rd: 3 validations, the last at the last epoch
    assert trainer.current_epoch == 9 and trainer.check_val_every_n_epoch == 3
    assert len(budget.history) == 3


def test_max_steps_given_by_the_user_wins(tmp_path: Path) -> None:
    budget = TrainingBudget(min_steps=50, warn_below=0)
    trainer = _fit(tmp_path, budget, max_epochs=1, max_steps=3)
    assert trainer.global_step == 2  # one epoch of 2 steps: max_steps set, so the floor does not apply
    assert budget.planned_steps == 2


def test_history_and_state_round_trip(tmp_path: Path) -> None:
    budget = TrainingBudget(warn_below=0)
    _fit(tmp_path, budget, max_epochs=3)
    assert len(budget.history) == 3 and len(budget.val_counts) == 10 and sum(budget.val_counts) == 16
    other = TrainingBudget()
    other.load_state_dict(budget.state_dict())
    assert other.history == budget.history and other.val_counts == budget.val_counts


def test_verdicts() -> None:
    budget = TrainingBudget()
    budget.history = [2.0, 1.5, 1.0, 0.7]
    budget.val_counts = [0, 30, 0]
    lines = budget.verdicts(test_counts=[0, 0, 60])
    assert any("still improving" in line and "train longer" in line for line in lines)
    assert any("predicts class 2 for 60 of 60 test images" in line for line in lines)
    assert TrainingBudget().verdicts([20, 20, 20]) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_steps": -1}, r"min_steps=-1 must be >= 0"),
    ({"warn_below": -5}, r"warn_below=-5 must be >= 0"),
    ({"mode": "up"}, r"mode='up'"),
    ({"max_validations": 0}, r"max_validations=0 must be >= 1"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainingBudget(**kwargs)


def test_quickstart_budget_is_not_warned_about() -> None:
    import yaml

    from lightkit.functional.budget import steps_per_epoch

    config = yaml.safe_load(Path("configs/quickstart.yaml").read_text())
    args = config["data"]["init_args"]
    dm = DigitsDataModule(batch_size=args["batch_size"], image_size=args["image_size"])
    steps = steps_per_epoch(dm.split_sizes()["train"], dm.batch_size) * config["trainer"]["max_epochs"]
    assert steps >= TrainingBudget().warn_below


def test_testing_an_early_checkpoint_keeps_the_fits_history(tmp_path: Path) -> None:
    """``trainer.test(ckpt_path=...)`` restores callback state: the fit's history must survive it."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    budget = TrainingBudget(warn_below=0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    dm = DigitsDataModule(batch_size=16, image_size=32, samples_per_class=2)
    trainer = Trainer(logger=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[budget, checkpoints],
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1, limit_test_batches=1, max_epochs=3)
    model = tiny_model()
    trainer.fit(model, datamodule=dm)
    assert len(budget.history) == 3
    first = sorted((tmp_path / "ckpt").glob("epoch=0-*.ckpt"))[0]
    trainer.test(model, datamodule=dm, ckpt_path=str(first), verbose=False)
    assert len(budget.history) == 3  # not the one-entry history stored in the epoch-0 checkpoint
    resumed = TrainingBudget()
    resumed.load_state_dict(budget.state_dict())  # a fresh instance (resume) takes the state as given
    assert resumed.history == budget.history
