"""ImageClassifier: shapes, parameter groups, no-decay filter, label smoothing, heads, a short fit."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from lightkit.models.classifier import ImageClassifier, build_param_groups, lr_scheduler_config
from lightkit.models.heads import ClassifierHead


def _model(**kw) -> ImageClassifier:
    kw.setdefault("encoder", "test_resnet")
    kw.setdefault("num_classes", 10)
    kw.setdefault("in_chans", 1)
    return ImageClassifier(**kw)


def test_forward_shape_and_features() -> None:
    m = _model(hidden=[32, 16], dropout=0.1)
    x = torch.randn(3, 1, 32, 32)
    assert m(x).shape == (3, 10)
    assert m.forward_features(x).shape == (3, m.encoder.num_features)


def test_layer_groups_stem_to_head_cover_all_params() -> None:
    m = _model()
    groups = m.layer_groups()
    names = [g for g, _ in groups]
    assert names[0] == "encoder.stem" and names[-1] == "head"
    flat = [n for _, ps in groups for n, _ in ps]
    assert sorted(flat) == sorted(n for n, _ in m.named_parameters())


def test_optimizer_groups_named_and_no_decay_on_bias_and_norm() -> None:
    m = _model(optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    opt = m.configure_optimizers()
    by_name = {g["name"]: g for g in opt.param_groups}
    assert "head" in by_name and "head/no_decay" in by_name and "encoder.stem/no_decay" in by_name
    id_to_name = {id(p): n for n, p in m.named_parameters()}
    for g in opt.param_groups:
        names = [id_to_name[id(p)] for p in g["params"]]
        if g["name"].endswith("/no_decay"):
            assert g["weight_decay"] == 0.0
            assert all(n.endswith(".bias") or m.get_parameter(n).ndim == 1 for n in names)
        else:
            assert g["weight_decay"] == 0.05
            assert all(m.get_parameter(n).ndim > 1 for n in names)
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == len(list(m.parameters()))


def test_build_param_groups_skips_empty() -> None:
    p = torch.nn.Parameter(torch.zeros(2, 2))
    assert build_param_groups([("a", [("a.weight", p)]), ("b", [])]) == [{"params": [p], "name": "a", "group": "a"}]


def test_label_smoothing_loss_value() -> None:
    m = _model(label_smoothing=0.1)
    logits = torch.zeros(2, 10)
    # Uniform logits: loss is ln(C) whatever the smoothing.
    assert m.loss(logits, torch.tensor([1, 2])).item() == pytest.approx(math.log(10), rel=1e-6)
    logits = torch.tensor([[10.0] + [0.0] * 9])
    plain = _model().loss(logits, torch.tensor([0])).item()
    smoothed = m.loss(logits, torch.tensor([0])).item()
    assert smoothed > plain  # smoothing penalises over-confidence


def test_soft_targets_accepted() -> None:
    m = _model()
    soft = torch.full((2, 10), 0.1)
    assert torch.isfinite(m.loss(torch.randn(2, 10), soft))


@pytest.mark.parametrize("activation,expected", [("relu", "kaiming"), ("tanh", "xavier")])
def test_head_init_matches_activation(activation: str, expected: str) -> None:
    torch.manual_seed(0)
    head = ClassifierHead(4096, 10, hidden=[4096], activation=activation, init="auto")
    std = head[0].weight.std().item()
    target = math.sqrt(2 / 4096) if expected == "kaiming" else (5 / 3) * math.sqrt(2 / (4096 + 4096))
    assert std == pytest.approx(target, rel=0.02)
    assert torch.count_nonzero(head[0].bias) == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 0}, r"num_classes=0 must be >= 1"),
        ({"hidden": [0]}, r"hidden=\[0\] must contain positive widths"),
        ({"dropout": 1.0}, r"dropout=1.0 must be in \[0, 1\)"),
        ({"activation": "swish"}, r"activation='swish' is not one of"),
        ({"init": "orthogonal"}, r"head_init='orthogonal' is not one of"),
    ],
)
def test_head_errors(kwargs: dict, match: str) -> None:
    args = {"in_features": 8, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        ClassifierHead(**args)


def test_classifier_errors() -> None:
    with pytest.raises(ValueError, match=r"label_smoothing=1.0 must be in \[0, 1\)"):
        _model(label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"2 class_names for num_classes=10"):
        _model(class_names=["a", "b"])


def test_scheduler_factory_gets_total_steps() -> None:
    seen = {}

    class Sched(torch.optim.lr_scheduler.LambdaLR):
        interval = "step"

        def __init__(self, optimizer, total_steps: int | None = None, steps_per_epoch: int | None = None):
            seen.update(total=total_steps, per_epoch=steps_per_epoch)
            super().__init__(optimizer, lambda s: 1.0)

    class FakeTrainer:
        estimated_stepping_batches = 40
        num_training_batches = 20
        accumulate_grad_batches = 2

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = lr_scheduler_config(Sched, opt, FakeTrainer())
    assert seen == {"total": 40, "per_epoch": 10} and cfg["interval"] == "step"
    plateau = lr_scheduler_config(torch.optim.lr_scheduler.ReduceLROnPlateau, opt, FakeTrainer())
    assert plateau["monitor"] == "val/loss" and plateau["interval"] == "epoch"
    one_cycle = lr_scheduler_config(partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1), opt, FakeTrainer())
    assert one_cycle["interval"] == "step" and one_cycle["scheduler"].total_steps == 40


def test_short_fit_logs_metrics_and_moves_weights(tmp_path) -> None:
    x = torch.randn(24, 1, 32, 32)
    y = torch.arange(24) % 10
    dl = DataLoader(TensorDataset(x, y), batch_size=8)
    m = _model(optimizer=partial(torch.optim.SGD, lr=0.1))
    before = m.head[-1].weight.detach().clone()
    trainer = Trainer(max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path, logger=False,
                      enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1, accelerator="cpu")
    trainer.fit(m, dl, dl)
    assert trainer.global_step == 2
    assert not torch.equal(before, m.head[-1].weight)
    for key in ("train/loss", "val/loss", "val/acc", "val/f1", "val/acc_top5"):
        assert key in trainer.callback_metrics, key


def test_l1_penalty_added_to_training_loss_only_on_decay_params() -> None:
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    m = _model()
    m.eval()  # no BN batch statistics: both calls see the same forward
    base = m.training_step((x, y), 0)
    m.l1 = 0.01
    with_l1 = m.training_step((x, y), 0)
    expected = sum(p.abs().sum() for n, p in m.named_parameters() if p.ndim > 1)
    assert (with_l1 - base).item() == pytest.approx(0.01 * expected.item(), rel=1e-4)
    with pytest.raises(ValueError, match=r"l1=-1.0 must be >= 0"):
        _model(l1=-1.0)


def test_metrics_match_sklearn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    m = _model()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (200,), generator=g)
    logits = torch.randn(200, 10, generator=g)
    logits[torch.arange(150), y[:150]] += 5.0  # 150 of 200 right, the rest random
    for chunk in range(0, 200, 64):  # several updates, as in an epoch
        m.test_metrics.update(logits[chunk:chunk + 64], y[chunk:chunk + 64])
    out = m.test_metrics.compute()
    pred = logits.argmax(1)
    assert out["test/acc"].item() == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert out["test/f1"].item() == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    top5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1).float().mean().item()
    assert out["test/acc_top5"].item() == pytest.approx(top5, abs=1e-6)


class _RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call: ``[(step, {key: value})]``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((int(step or 0), dict(metrics)))


def test_epoch_metrics_cover_every_batch_and_are_logged_once_per_epoch(tmp_path) -> None:
    """Metric objects are handed to Lightning once per epoch (not per step); the epoch figures still
    cover every batch of the epoch, for training and for each validation run."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)
    train, val = DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    m = _model(optimizer=partial(torch.optim.SGD, lr=0.05))
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}
    per_epoch: dict[str, list[float]] = {"train": [], "val": []}
    for stage in ("train", "val"):
        collection = getattr(m, f"{stage}_metrics")
        update = collection.update

        def spy(logits, target, _stage=stage, _update=update):
            seen[_stage].append((logits.argmax(1), target))
            _update(logits, target)

        collection.update = spy
    log_dict_calls: list[str] = []
    original = m.log_dict

    def counting_log_dict(dictionary, *args, **kwargs):
        log_dict_calls.append(getattr(dictionary, "prefix", None) or "dict")
        return original(dictionary, *args, **kwargs)

    m.log_dict = counting_log_dict

    class EpochAccuracy(Callback):  # what the epoch's updates say, to compare with what was logged
        def on_train_epoch_end(self, trainer, pl_module):
            per_epoch["train"].append(_acc(seen["train"]))
            seen["train"].clear()

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                per_epoch["val"].append(_acc(seen["val"]))
            seen["val"].clear()

    def _acc(pairs):
        return float(sum((p == t).sum() for p, t in pairs)) / sum(len(t) for _, t in pairs)

    logger = _RecordingLogger()
    trainer = Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=2, val_check_interval=0.5,
                      num_sanity_val_steps=1, default_root_dir=tmp_path, logger=logger, log_every_n_steps=1,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", callbacks=[EpochAccuracy()])
    trainer.fit(m, train, val)
    logged = {stage: [row[f"{stage}/acc"] for _, row in logger.rows if f"{stage}/acc" in row]
              for stage in ("train", "val")}
    assert len(logged["train"]) == 2 and logged["train"] == pytest.approx(per_epoch["train"], abs=1e-6)
    assert len(logged["val"]) == 4 and logged["val"] == pytest.approx(per_epoch["val"], abs=1e-6)  # 2 runs per epoch
    # not once per step (10 train + 9 val steps): train metrics at each epoch start and again after each
    # of its 2 validations (after batches 2 and 4 of 5: training goes on after both), val metrics once
    # per validation run (4) and in the sanity check
    assert log_dict_calls.count("train/") == 2 * 3
    assert log_dict_calls.count("val/") == 5
