"""MixUp / CutMix / Cutout / smoothing against hand-computed oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightkit.functional.mixing import (
    cutmix_batch,
    cutmix_box,
    mixup_batch,
    one_hot_smooth,
    sample_lam,
)


def _batch(n: int, c: int = 1, h: int = 4, w: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)
    return x, torch.arange(n) % 3


def test_one_hot_smooth_oracle() -> None:
    soft = one_hot_smooth(torch.tensor([0, 2]), 4, 0.2)
    torch.testing.assert_close(soft, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]]))
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    assert one_hot_smooth(torch.tensor([1]), 3).tolist() == [[0.0, 1.0, 0.0]]


def test_one_hot_smooth_matches_cross_entropy_smoothing() -> None:
    logits, y = torch.randn(5, 7), torch.randint(0, 7, (5,))
    torch.testing.assert_close(
        F.cross_entropy(logits, one_hot_smooth(y, 7, 0.1)), F.cross_entropy(logits, y, label_smoothing=0.1)
    )


@pytest.mark.parametrize("n", [1, 3, 4])
def test_mixup_oracle(n: int) -> None:
    x, y = _batch(n)
    index = torch.arange(n).flip(0)
    x_mixed, y_soft, lam, idx = mixup_batch(x, y, num_classes=3, lam=0.7, index=index)
    assert lam == 0.7 and torch.equal(idx, index)
    for i in range(n):
        j = n - 1 - i
        torch.testing.assert_close(x_mixed[i], 0.7 * x[i] + 0.3 * x[j])
        expected = torch.zeros(3)
        expected[y[i]] += 0.7
        expected[y[j]] += 0.3
        torch.testing.assert_close(y_soft[i], expected)
    assert y_soft.shape == (n, 3) and y_soft.dtype == torch.float32
    torch.testing.assert_close(y_soft.sum(1), torch.ones(n))
    assert torch.equal(x, _batch(n)[0])  # input untouched


def test_mixup_size_one_is_identity() -> None:
    x, y = _batch(1)
    x_mixed, y_soft, _, _ = mixup_batch(x, y, 3, alpha=0.4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_mixed, x)
    assert y_soft.tolist() == [[1.0, 0.0, 0.0]]


def test_mixup_with_smoothing_sums_to_one() -> None:
    x, y = _batch(3)
    _, y_soft, _, _ = mixup_batch(x, y, 5, lam=0.6, index=torch.tensor([1, 2, 0]), smoothing=0.1)
    torch.testing.assert_close(y_soft.sum(1), torch.ones(3))
    assert y_soft.min() == pytest.approx(0.02)


def test_generator_makes_it_reproducible() -> None:
    x, y = _batch(5)
    a = mixup_batch(x, y, 3, alpha=0.2, generator=torch.Generator().manual_seed(3))
    b = mixup_batch(x, y, 3, alpha=0.2, generator=torch.Generator().manual_seed(3))
    assert a[2] == b[2] and torch.equal(a[3], b[3]) and torch.equal(a[0], b[0])
    lams = [sample_lam(0.2, torch.Generator().manual_seed(s)) for s in range(200)]
    assert all(0.0 <= v <= 1.0 for v in lams)
    assert sum(v < 0.1 or v > 0.9 for v in lams) > 100  # Beta(0.2, 0.2) is U-shaped


def test_cutmix_box_area_and_clipping() -> None:
    assert cutmix_box(8, 8, lam=0.75, center=(4, 4)) == (2, 6, 2, 6)  # side sqrt(0.25) * 8 = 4
    assert cutmix_box(8, 8, lam=0.75, center=(0, 7)) == (0, 2, 5, 8)  # clipped at top and right
    assert cutmix_box(8, 8, lam=1.0, center=(3, 3)) == (3, 3, 3, 3)  # empty


@pytest.mark.parametrize("n", [1, 3])
def test_cutmix_oracle(n: int) -> None:
    x, y = _batch(n, c=2, h=8, w=8)
    index = torch.roll(torch.arange(n), 1)
    x_mixed, y_soft, lam, _ = cutmix_batch(x, y, 3, lam=0.75, index=index, center=(0, 7))
    expected = x.clone()
    expected[:, :, 0:2, 5:8] = x[index, :, 0:2, 5:8]
    torch.testing.assert_close(x_mixed, expected)
    assert lam == pytest.approx(1 - 6 / 64)  # corrected to the clipped box area, not 0.75
    expected_y = 0.0 + lam * F.one_hot(y, 3) + (1 - lam) * F.one_hot(y[index], 3)
    torch.testing.assert_close(y_soft, expected_y.float())
    torch.testing.assert_close(y_soft.sum(1), torch.ones(n))


def test_cutmix_random_lam_matches_box() -> None:
    x, y = _batch(3, h=10, w=10)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x_mixed, _, lam, index = cutmix_batch(x, y, 3, alpha=1.0, generator=g)
        changed = (x_mixed != x).any(1)[0].float().mean().item() if index[0] != 0 else None
        if changed is not None:
            assert changed == pytest.approx(1 - lam)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: one_hot_smooth(torch.tensor([0]), 3, 1.0), r"smoothing=1.0 must be in \[0, 1\)"),
        (lambda: one_hot_smooth(torch.zeros(2, 4), 3), r"targets of shape \(2, 4\); give class indices"),
        (lambda: sample_lam(0.0), "alpha=0.0 must be > 0"),
        (lambda: mixup_batch(*_batch(2), 3, lam=1.5), r"lam=1.5 must be in \[0, 1\]"),
        (lambda: mixup_batch(*_batch(2), 3, lam=0.5, index=torch.tensor([0])), r"index of shape \(1,\) for a "
                                                                               r"batch of 2"),
        (lambda: cutmix_batch(torch.ones(2, 4), torch.tensor([0, 1]), 3, lam=0.5), r"give images \(N, C, H, "
                                                                                   r"W\)"),
    ],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
