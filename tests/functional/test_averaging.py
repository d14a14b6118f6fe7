"""EMA / SWA updates against hand computations; the averagers through torch's ``AveragedModel``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from lightkit.functional.averaging import EMAAverager, SWAAverager, ema_decay, ema_update_, swa_update_


def test_ema_decay_golden() -> None:
    # TF ExponentialMovingAverage(num_updates=t): min(decay, (1 + t) / (10 + t)).
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay(10**6, 0.999) == 0.999
    assert ema_decay(5, 0.5) == pytest.approx(0.4) and ema_decay(20, 0.5) == 0.5
    assert ema_decay(0, 0.999, warmup=False) == 0.999


def test_ema_update_hand_computed() -> None:
    avg = [torch.tensor([1.0, 2.0]), torch.tensor(3, dtype=torch.int64)]
    ema_update_(avg, [torch.tensor([3.0, 6.0]), torch.tensor(7)], decay=0.75)
    torch.testing.assert_close(avg[0], torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6]))
    assert int(avg[1]) == 7  # integer buffers (num_batches_tracked) are copied, not averaged


def test_swa_update_is_running_mean() -> None:
    values = [torch.randn(4) for _ in range(5)]
    avg = [values[0].clone()]
    for n, v in enumerate(values[1:], start=1):
        swa_update_(avg, [v], num_averaged=n)
    torch.testing.assert_close(avg[0], torch.stack(values).mean(0))


def test_averagers_in_averaged_model() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = AveragedModel(model, multi_avg_fn=EMAAverager(0.9), use_buffers=True)
    swa = AveragedModel(model, multi_avg_fn=SWAAverager(), use_buffers=True)
    history = []
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        history.append([p.clone() for p in model.parameters()])
        ema.update_parameters(model)
        swa.update_parameters(model)
    expected_ema = [h.clone() for h in history[0]]  # the first update copies
    for t, weights in enumerate(history[1:], start=1):
        d = min(0.9, (1 + t) / (10 + t))
        expected_ema = [d * e + (1 - d) * w for e, w in zip(expected_ema, weights, strict=True)]
    for got, want in zip(ema.module.parameters(), expected_ema, strict=True):
        torch.testing.assert_close(got, want)
    for got, *seen in zip(swa.module.parameters(), *history, strict=True):
        torch.testing.assert_close(got, torch.stack(seen).mean(0))


def test_raises() -> None:
    with pytest.raises(ValueError, match=r"ema_decay: decay=1.0 must be in \[0, 1\)"):
        ema_decay(0, 1.0)
    with pytest.raises(ValueError, match="ema_decay: num_updates=-1 must be >= 0"):
        ema_decay(-1, 0.9)
    with pytest.raises(ValueError, match=r"ema_update_: decay=1.5 must be in \[0, 1\]"):
        ema_update_([torch.zeros(1)], [torch.ones(1)], 1.5)
    with pytest.raises(ValueError, match="averaging: 1 averaged tensors for 2 current ones"):
        ema_update_([torch.zeros(1)], [torch.ones(1), torch.ones(1)], 0.5)
    with pytest.raises(ValueError, match="swa_update_: num_averaged=-2 must be >= 0"):
        swa_update_([torch.zeros(1)], [torch.ones(1)], -2)
    with pytest.raises(ValueError, match="ema_decay: decay=-0.1"):
        EMAAverager(-0.1)
