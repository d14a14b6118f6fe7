"""BatchNorm folding: folded outputs match the original within 1e-4 on several timm families, frozen BN
folds, unfoldable BN is reported with its reason, and bad input raises with the fix."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d, StdConv2d, convert_sync_batchnorm
from timm.layers.norm_act import freeze_batch_norm_2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from lightkit.functional.fold import FoldReport, fold_batchnorm

ATOL = 1e-4
_BN_TYPES = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d, FrozenBatchNormAct2d)


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BN_TYPES) for m in model.modules())


def _randomize_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-identity BN: random running stats and affine, then a few train-mode passes to mix in batch stats."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@pytest.mark.parametrize(
    "name",
    ["resnet10t", "test_resnet", "test_efficientnet", "mobilenetv3_small_050"],
)
def test_fold_timm_families_match_and_remove_all_bn(
    name: str, record_property: pytest.RecordProperty
) -> None:
    x = torch.randn(2, 3, 64, 64)
    model = _randomize_bn(timm.create_model(name, pretrained=False, num_classes=10), x)
    n_bn = _count_bn(model)
    before = copy.deepcopy(model.state_dict())

    folded, report = fold_batchnorm(model)

    diff = _max_diff(model, folded, x)
    record_property("max_abs_diff", diff)
    print(f"{name}: folded {len(report.folded)} BN, max abs diff {diff:.2e}")
    assert diff <= ATOL, f"{name}: max abs diff {diff:.3e} > {ATOL}"
    assert n_bn > 0 and len(report.folded) == n_bn and report.unfolded == []
    assert _count_bn(folded) == 0
    assert type(folded) is type(model) and folded.forward_head is not None  # timm API kept
    # inplace=False leaves the original untouched
    assert _count_bn(model) == n_bn
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fold_convnext_reports_nothing_to_fold() -> None:
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)

    folded, report = fold_batchnorm(model)

    assert report.folded == [] and report.unfolded == []
    assert len(report.notes) == 1
    assert "no BatchNorm in model" in report.notes[0] and "LayerNorm2d" in report.notes[0]
    assert "NormMlpClassifierHead" not in report.notes[0]
    assert _max_diff(model, folded, x) == 0.0


@pytest.mark.parametrize(
    ("name", "frozen_type"), [("test_resnet", FrozenBatchNorm2d), ("test_efficientnet", FrozenBatchNormAct2d)]
)
def test_fold_frozen_batchnorm(name: str, frozen_type: type, record_property: pytest.RecordProperty) -> None:
    x = torch.randn(2, 3, 64, 64)
    model = _randomize_bn(timm.create_model(name, pretrained=False, num_classes=10), x)
    model = freeze_batch_norm_2d(model).eval()
    n_frozen = sum(isinstance(m, frozen_type) for m in model.modules())
    assert n_frozen > 0

    folded, report = fold_batchnorm(model)

    diff = _max_diff(model, folded, x)
    record_property("max_abs_diff", diff)
    print(f"{name} frozen: folded {len(report.folded)} BN, max abs diff {diff:.2e}")
    assert diff <= ATOL
    assert _count_bn(folded) == 0
    assert {p.bn_type for p in report.folded} >= {frozen_type.__name__}


def test_fold_bn_act_keeps_activation_and_drop() -> None:
    """BatchNormAct2d is replaced by its act (or Sequential(drop, act)), never dropped with it."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        BatchNormAct2d(8, act_layer=nn.SiLU),
        nn.Conv2d(8, 8, 3, padding=1),
        BatchNormAct2d(8, act_layer=nn.ReLU, drop_layer=nn.Dropout),
        nn.Conv2d(8, 4, 1),
        BatchNormAct2d(4, apply_act=False),
    )
    x = torch.randn(2, 3, 16, 16)
    _randomize_bn(model, x)

    folded, report = fold_batchnorm(model)

    assert [p.replaced_by for p in report.folded] == ["SiLU", "Sequential", "Identity"]
    assert isinstance(folded[1], nn.SiLU)
    assert isinstance(folded[3][0], nn.Dropout) and isinstance(folded[3][1], nn.ReLU)
    assert folded[0].bias is not None  # bias created for a bias-free conv
    assert _max_diff(model, folded, x) <= ATOL


def test_fold_sync_batchnorm_after_timm_conversion() -> None:
    """A model converted for DDP (SyncBatchNorm, timm SyncBatchNormAct) folds like plain BN."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act_layer=nn.SiLU), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
    )
    x = torch.randn(2, 3, 12, 12)
    model = convert_sync_batchnorm(_randomize_bn(model, x)).eval()

    folded, report = fold_batchnorm(model)

    assert [(p.bn_type, p.replaced_by) for p in report.folded] == [
        ("SyncBatchNormAct", "SiLU"),
        ("SyncBatchNorm", "Identity"),
    ]
    assert _count_bn(folded) == 0
    assert _max_diff(model, folded, x) <= ATOL


class _Unfoldable(nn.Module):
    """One BN of each kind that must stay, next to one pair that folds."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv_ok = nn.Conv2d(3, 8, 3, padding=1)
        self.bn_ok = nn.BatchNorm2d(8, affine=False)
        self.conv_res = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_res = nn.BatchNorm2d(8)
        self.conv_std = StdConv2d(8, 8, 3, padding=1)
        self.bn_std = nn.BatchNorm2d(8)
        self.conv_nostats = nn.Conv2d(8, 8, 1)
        self.bn_nostats = nn.BatchNorm2d(8, track_running_stats=False)
        self.conv_twice = nn.Conv2d(8, 8, 1)
        self.bn_twice = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.bn_fc = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_ok(self.conv_ok(self.bn_in(x)))
        y = self.conv_res(x)
        x = self.bn_res(y) + y  # conv output also feeds the residual
        x = self.bn_std(self.conv_std(x))
        x = self.bn_nostats(self.conv_nostats(x))
        x = self.bn_twice(self.conv_twice(x))
        x = self.bn_twice(x)
        return self.bn_fc(self.fc(x.mean((2, 3))))


def test_fold_reports_each_unfoldable_bn_with_reason() -> None:
    x = torch.randn(4, 3, 16, 16)
    model = _randomize_bn(_Unfoldable(), x)

    folded, report = fold_batchnorm(model)

    assert [(p.conv, p.bn) for p in report.folded] == [("conv_ok", "bn_ok")]
    reasons = {u.name: u.reason for u in report.unfolded}
    assert set(reasons) == {"bn_in", "bn_res", "bn_std", "bn_nostats", "bn_twice", "bn_fc"}
    assert "input of the model" in reasons["bn_in"]
    assert "output used 2 times" in reasons["bn_res"] and "add" in reasons["bn_res"]
    assert "StdConv2d" in reasons["bn_std"]
    assert "track_running_stats=False" in reasons["bn_nostats"]
    assert "called 2 times" in reasons["bn_twice"]
    assert "follows a Linear" in reasons["bn_fc"]
    assert "unfolded bn_fc (BatchNorm1d): BN follows a Linear" in str(report)
    assert _max_diff(model, folded, x) <= ATOL


class _DataDependent(nn.Module):
    """Tensor-valued control flow: torch.fx cannot trace this module, but it can trace its children."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        if x.sum() > 0:
            x = x * 2
        return self.bn(self.conv(x))


def test_fold_untraceable_module_falls_back_to_children() -> None:
    x = torch.randn(2, 3, 16, 16)
    model = _randomize_bn(_DataDependent(), x)

    folded, report = fold_batchnorm(model)

    assert [(p.conv, p.bn) for p in report.folded] == [("block.0", "block.1")]
    assert [u.name for u in report.unfolded] == ["bn"]
    assert "could not trace its enclosing module '<model>'" in report.unfolded[0].reason
    assert any("torch.fx could not trace '<model>'" in n for n in report.notes)
    assert _max_diff(model, folded, x) <= ATOL


def test_fold_inplace_returns_same_model() -> None:
    x = torch.randn(2, 3, 32, 32)
    model = _randomize_bn(timm.create_model("test_resnet", pretrained=False, num_classes=4), x)
    expected = model(x).detach()

    folded, report = fold_batchnorm(model, inplace=True)

    assert folded is model and isinstance(report, FoldReport)
    assert _count_bn(model) == 0
    assert (model(x) - expected).abs().max().item() <= ATOL


def test_fold_raises_in_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(
        ValueError, match=r"3 module\(s\) are in training mode \(<model>, 0, 1\).*Call model.eval\(\)"
    ):
        fold_batchnorm(model)
    model.eval()
    model[1].train()
    with pytest.raises(ValueError, match=r"training mode \(1\)"):
        fold_batchnorm(model)


def test_fold_raises_on_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        fold_batchnorm({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inplace must be True or False, got 'yes'"):
        fold_batchnorm(nn.Conv2d(1, 1, 1).eval(), inplace="yes")  # type: ignore[arg-type]
