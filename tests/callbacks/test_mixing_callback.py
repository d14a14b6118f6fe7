"""``MixUpCutMix`` in short CPU fits: soft targets in training only, off epochs, pause flag, resume."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightkit.callbacks.mixing import PAUSE_FLAG, MixUpCutMix
from lightkit.models.classifier import ImageClassifier


class RecordingClassifier(ImageClassifier):
    """Records what each step receives, to check that the callback's in-place replacement arrives."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append(("train", self.current_epoch, batch[0].clone(), batch[1].clone()))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.seen.append(("val", self.current_epoch, batch[0].clone(), batch[1].clone()))
        super().validation_step(batch, batch_idx)


def _model() -> RecordingClassifier:
    model = RecordingClassifier(encoder="test_resnet", num_classes=10, in_chans=1)
    model.seen = []
    return model


def _loader(n: int = 8, batch_size: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def _fit(model: LightningModule, callback: MixUpCutMix, tmp_path: Any, ckpt_path: str | None = None,
         **trainer_kwargs: Any) -> Trainer:
    kwargs = {"max_steps": 3, "limit_val_batches": 1, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = Trainer(
        logger=False, enable_checkpointing=False, accelerator="cpu", default_root_dir=tmp_path, callbacks=[callback],
        **{**kwargs, **trainer_kwargs},
    )
    trainer.fit(model, _loader(), _loader(4, 2), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("kind",
                         [{"mixup_alpha": 0.4}, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}, {"cutmix_alpha": 1.0}])
def test_training_sees_soft_targets_validation_does_not(kind: dict, tmp_path: Any) -> None:
    model = _model()
    trainer = _fit(model, MixUpCutMix(**kind), tmp_path)
    train = [s for s in model.seen if s[0] == "train"]
    val = [s for s in model.seen if s[0] == "val"]
    # Odd sizes; size 1 is covered by the functional tests (test_resnet's BatchNorm rejects it at 32 px).
    assert [t[2].shape[0] for t in train] == [3, 3, 2]
    for _, _, x, y in train:
        assert y.shape == (x.shape[0], 10) and y.dtype == torch.float32
        torch.testing.assert_close(y.sum(1), torch.ones(x.shape[0]))
    assert any(not torch.equal(t[2], b[0]) for t, b in zip(train, _loader(), strict=True))  # images were mixed
    assert val and all(v[3].ndim == 1 and v[3].dtype == torch.int64 for v in val)  # sanity check + validation
    assert 0.0 <= float(trainer.callback_metrics["mixing/lam"]) <= 1.0


def test_off_last_epochs_and_pause_flag(tmp_path: Any) -> None:
    model = _model()
    _fit(model, MixUpCutMix(off_last_epochs=1), tmp_path, max_steps=-1, max_epochs=2, limit_train_batches=2)
    ndims = [(s[1], s[3].ndim) for s in model.seen if s[0] == "train"]
    assert ndims == [(0, 2), (0, 2), (1, 1), (1, 1)]

    paused = _model()
    setattr(paused, PAUSE_FLAG, True)
    callback = MixUpCutMix()
    _fit(paused, callback, tmp_path, max_steps=2)
    assert all(s[3].ndim == 1 for s in paused.seen) and callback.batches_seen == 0


def test_prob_zero_only_smooths(tmp_path: Any) -> None:
    model = _model()
    _fit(model, MixUpCutMix(prob=0.0, label_smoothing=0.1), tmp_path, max_steps=1)
    _, _, x, y = next(s for s in model.seen if s[0] == "train")
    torch.testing.assert_close(x, next(iter(_loader()))[0])
    assert y.max().item() == pytest.approx(0.91) and y.min().item() == pytest.approx(0.01)


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.3}, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_callback_mix_matches_the_oracle(kwargs: dict, seed: int) -> None:
    """Hand-computed mix for the lam and partner index the callback drew."""
    x, y = next(iter(_loader()))
    callback = MixUpCutMix(num_classes=10, **kwargs)
    callback._num_classes = 10  # what setup() resolves
    callback._generator.manual_seed(seed)
    x_mixed, y_soft, lam, index = callback.mix(x, y)
    if "cutmix_alpha" in kwargs:
        x_ref = x.clone()
        moved = (x_mixed != x).any(1)
        if moved.any():
            rows, cols = moved.any(2).any(0).nonzero()[:, 0], moved.any(1).any(0).nonzero()[:, 0]
            y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            x_ref[:, :, y0:y1, x0:x1] = x[index, :, y0:y1, x0:x1]
            assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (32 * 32))
    else:
        x_ref = lam * x + (1 - lam) * x[index]
    torch.testing.assert_close(x_mixed, x_ref)
    one_hot = torch.nn.functional.one_hot(y, 10).float()
    torch.testing.assert_close(y_soft, lam * one_hot + (1 - lam) * one_hot[index])


def test_state_round_trip_and_exact_resume(tmp_path: Any) -> None:
    straight_model, straight_cb = _model(), MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=3)
    _fit(straight_model, straight_cb, tmp_path / "a", max_steps=-1, max_epochs=2, limit_train_batches=2)

    first_model, first_cb = _model(), MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=3)
    trainer = _fit(first_model, first_cb, tmp_path / "b", max_steps=-1, max_epochs=1, limit_train_batches=2)
    ckpt = str(tmp_path / "epoch1.ckpt")
    trainer.save_checkpoint(ckpt)
    resumed_model, resumed_cb = _model(), MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=99)
    _fit(resumed_model, resumed_cb, tmp_path / "c", ckpt_path=ckpt, max_steps=-1, max_epochs=2, limit_train_batches=2)

    straight = [s for s in straight_model.seen if s[0] == "train" and s[1] == 1]
    resumed = [s for s in resumed_model.seen if s[0] == "train" and s[1] == 1]
    assert len(straight) == len(resumed) == 2
    for a, b in zip(straight, resumed, strict=True):
        torch.testing.assert_close(a[2], b[2])
        torch.testing.assert_close(a[3], b[3])
    assert resumed_cb.seed == 3 and resumed_cb.batches_seen == straight_cb.batches_seen == 4

    state = straight_cb.state_dict()
    fresh = MixUpCutMix()
    fresh.load_state_dict(state)
    assert fresh.state_dict()["batches_seen"] == 4 and torch.equal(fresh.state_dict()["generator"], state["generator"])


def test_ranks_draw_different_mixes() -> None:
    callback = MixUpCutMix()
    assert callback._stream_seed(0) != callback._stream_seed(1)


def test_tuple_batch_raises() -> None:
    callback = MixUpCutMix(num_classes=10)
    trainer = SimpleNamespace(training=True, sanity_checking=False, max_epochs=1, current_epoch=0, global_rank=0)
    with pytest.raises(TypeError, match="training batch is a tuple; it needs a list"):
        callback.on_train_batch_start(trainer, LightningModule(), (torch.ones(2, 1, 4, 4), torch.zeros(2)), 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mixup_alpha": 0.0}, r"mixup_alpha=0.0, cutmix_alpha=0.0; set at least one > 0"),
        ({"cutmix_alpha": -1.0}, "set at least one > 0"),
        ({"prob": 1.5}, r"prob=1.5 must be a probability in \[0, 1\]"),
        ({"switch_prob": -0.1}, "switch_prob=-0.1 must be a probability"),
        ({"off_last_epochs": -1}, "off_last_epochs=-1 must be >= 0"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0 must be in \[0, 1\)"),
        ({"num_classes": 1}, "num_classes=1 must be >= 2"),
    ],
)
def test_init_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixUpCutMix(**kwargs)


def test_setup_raises() -> None:
    with pytest.raises(ValueError,
                       match=r"no num_classes on LightningModule.hparams; pass MixUpCutMix\(num_classes=...\)"):
        MixUpCutMix().setup(Trainer(max_epochs=1, logger=False), LightningModule(), "fit")
    with pytest.raises(ValueError, match=r"off_last_epochs=1 needs Trainer\(max_epochs=...\)"):
        MixUpCutMix(off_last_epochs=1).setup(Trainer(max_steps=3, logger=False), _model(), "fit")
