"""``EMA``: the math against a hand computation, validation of both weight sets, checkpoints, exact resume."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from lightkit.callbacks.ema import EMA
from lightkit.callbacks.swa import SWA
from tests.helpers.tiny_fit import (
    Crash,
    WeightRecorder,
    assert_states_close,
    tiny_fit,
    tiny_loader,
    tiny_model,
)


def _hand_ema(states: list[dict[str, torch.Tensor]], decay: float, warmup: bool = True) -> dict[str, torch.Tensor]:
    avg = {k: v.clone() for k, v in states[0].items()}  # the first update copies
    for t, state in enumerate(states[1:], start=1):
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        for k, v in state.items():
            avg[k] = d * avg[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    return avg


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_matches_hand_computation(warmup: bool, tmp_path: Any) -> None:
    model, recorder, ema = tiny_model(), WeightRecorder(), EMA(decay=0.8, warmup=warmup)
    tiny_fit(model, [recorder, ema], tmp_path, max_steps=5, limit_val_batches=0)
    assert ema.num_averaged == 5
    assert_states_close(model.state_dict(), _hand_ema(recorder.states, 0.8, warmup))  # after fit: the average
    assert_states_close(ema.raw_state_dict(model), recorder.states[-1])
    assert_states_close(ema.averaged_state_dict(model), model.state_dict())


def test_every_n_steps_and_start_step(tmp_path: Any) -> None:
    model, recorder, ema = tiny_model(), WeightRecorder(), EMA(decay=0.5, every_n_steps=2, start_step=1)
    tiny_fit(model, [recorder, ema], tmp_path, max_steps=6, limit_val_batches=0)
    assert ema.num_averaged == 3  # after steps 1, 3, 5 (0-based)
    assert_states_close(model.state_dict(), _hand_ema(recorder.states[1::2], 0.5))


def _val_loss_acc(model: LightningModule, state: dict[str, torch.Tensor]) -> tuple[float, float]:
    probe = tiny_model()
    probe.load_state_dict(state)
    probe.eval()
    x, y = (torch.cat(t) for t in zip(*tiny_loader(8, 4, seed=1), strict=True))
    with torch.no_grad():
        logits = probe(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


@pytest.mark.parametrize("validate_with", ["both", "ema", "raw"])
def test_validation_uses_the_chosen_weights(validate_with: str, tmp_path: Any) -> None:
    model, ema = tiny_model(), EMA(decay=0.6, validate_with=validate_with)
    trainer = tiny_fit(model, [ema], tmp_path, max_steps=3, limit_val_batches=2)  # one epoch, validated at its end
    metrics = trainer.callback_metrics
    raw_loss, raw_acc = _val_loss_acc(model, ema.raw_state_dict(model))
    avg_loss, _ = _val_loss_acc(model, ema.averaged_state_dict(model))
    assert abs(raw_loss - avg_loss) > 1e-4  # the two weight sets differ, so the test can tell them apart
    assert float(metrics["val/loss"]) == pytest.approx(raw_loss if validate_with == "raw" else avg_loss, rel=1e-5)
    if validate_with == "both":
        assert float(metrics["ema/raw_val_loss"]) == pytest.approx(raw_loss, rel=1e-5)
        assert float(metrics["ema/raw_val_acc"]) == pytest.approx(raw_acc)
    else:
        assert "ema/raw_val_loss" not in metrics


def test_checkpoint_holds_both_sets_and_test_evaluates_the_average(tmp_path: Any) -> None:
    model, ema = tiny_model(), EMA(decay=0.6)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_fit(model, [ema, ckpt], tmp_path, max_steps=3, enable_checkpointing=True)
    saved = torch.load(ckpt.last_model_path, weights_only=False)
    assert saved["weight_averaging"] == {
        "callback": "EMA", "state_dict": "average", "validate_with": "both", "raw_key": "current_model_state",
        "average_key": "state_dict", "num_averaged": 3, "saved_while_swapped": False,
    }
    assert_states_close(saved["state_dict"], ema.averaged_state_dict(model))
    assert_states_close(saved["current_model_state"], ema.raw_state_dict(model))
    # Lightning's WeightAveraging would load current_model_state (the raw weights) here.
    trainer.test(model, tiny_loader(8, 4, seed=1), ckpt_path=ckpt.last_model_path, verbose=False)
    assert_states_close(model.state_dict(), saved["state_dict"])


def test_validate_with_raw_keeps_raw_in_state_dict(tmp_path: Any) -> None:
    model, ema = tiny_model(), EMA(decay=0.6, validate_with="raw")
    trainer = tiny_fit(model, [ema], tmp_path, max_steps=3)
    trainer.save_checkpoint(tmp_path / "post.ckpt")
    saved = torch.load(tmp_path / "post.ckpt", weights_only=False)
    assert saved["weight_averaging"]["state_dict"] == "raw" and saved["weight_averaging"]["saved_while_swapped"]
    assert_states_close(saved["state_dict"], ema.raw_state_dict(model))
    assert_states_close(saved["average_model_state"], ema.averaged_state_dict(model))


class SaveDuringValidation(Callback):
    """Writes a checkpoint at the end of the first real validation, while the average is swapped in
    (placed before the EMA callback, whose epoch-end hook swaps back)."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.global_step == 3:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("how", ["model_checkpoint", "during_validation", "after_fit"])
def test_resume_continues_from_raw_weights(how: str, tmp_path: Any) -> None:
    straight_model, straight = tiny_model(), EMA(decay=0.7)
    tiny_fit(straight_model, [straight], tmp_path / "straight", max_steps=6)

    first_model, first = tiny_model(), EMA(decay=0.7)
    path = tmp_path / "resume.ckpt"
    if how == "model_checkpoint":
        ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=3, save_top_k=-1, filename="{step}")
        with pytest.raises(RuntimeError, match="simulated crash"):
            tiny_fit(first_model, [first, ckpt, Crash(4)], tmp_path / "first", max_steps=6, enable_checkpointing=True)
        path = tmp_path / "ck" / "step=3.ckpt"
    elif how == "during_validation":
        with pytest.raises(RuntimeError, match="simulated crash"):
            tiny_fit(first_model, [SaveDuringValidation(path), first, Crash(4)], tmp_path / "first", max_steps=6)
    else:
        trainer = tiny_fit(first_model, [first], tmp_path / "first", max_steps=3)
        trainer.save_checkpoint(path)
    meta = torch.load(path, weights_only=False)["weight_averaging"]
    assert meta["saved_while_swapped"] == (how != "model_checkpoint") and meta["num_averaged"] == 3

    resumed_model, resumed = tiny_model(lr=0.05), EMA(decay=0.7)
    tiny_fit(resumed_model, [resumed], tmp_path / "resumed", ckpt_path=str(path), max_steps=6)
    assert resumed.num_averaged == straight.num_averaged == 6
    assert_states_close(resumed.raw_state_dict(resumed_model), straight.raw_state_dict(straight_model))
    assert_states_close(resumed_model.state_dict(), straight_model.state_dict())  # the averages


def test_fit_twice_with_one_instance(tmp_path: Any) -> None:
    model, ema = tiny_model(), EMA(decay=0.5)
    tiny_fit(model, [ema], tmp_path, max_steps=3, limit_val_batches=0)
    tiny_fit(model, [ema], tmp_path, max_steps=2, limit_val_batches=0)
    assert ema.num_averaged == 2  # a new average, updated in the second fit too


def test_pickles_and_defaults() -> None:
    ema = pickle.loads(pickle.dumps(EMA()))
    assert ema.decay == 0.999 and ema.validate_with == "both" and ema.current_decay() == 0.0


def test_raises(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"EMA: decay=1.0 must be in \[0, 1\)"):
        EMA(decay=1.0)
    with pytest.raises(ValueError, match="EMA: every_n_steps=0 must be >= 1"):
        EMA(every_n_steps=0)
    with pytest.raises(ValueError, match="EMA: start_step=-1 must be >= 0"):
        EMA(start_step=-1)
    with pytest.raises(ValueError, match="EMA: validate_with='avg' is not one of"):
        EMA(validate_with="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EMA: there are no averaged weights before fit"):
        EMA().raw_state_dict(tiny_model())
    for other in (SWA(), EMAWeightAveraging()):
        with pytest.raises(ValueError, match=r"EMA: another weight-averaging callback \['"):
            tiny_fit(tiny_model(), [EMA(), other], tmp_path, max_steps=1)
