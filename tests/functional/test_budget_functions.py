"""Step budgets: counting like Lightning, the epoch floor, and the end-of-fit verdicts."""

from __future__ import annotations

import pytest

from lightkit.functional.budget import epochs_for_steps, predicts_one_class, steps_per_epoch, still_improving


@pytest.mark.parametrize(("args", "expected"), [
    ((1257, 64), 20),            # the quickstart: 5 epochs = 100 steps
    ((140, 64), 3),              # a small user folder: 5 epochs = 15 steps
    ((50, 64), 1),
    ((1257, 64, 2), 10),         # two processes: each rank has ceil(1257 / 2) samples
    ((1257, 64, 1, 4), 5),       # accumulation divides, rounding up
    ((1257, 64, 1, 1, 0.5), 10),
    ((1257, 64, 1, 1, 3), 3),
    ((0, 64), 0),
])
def test_steps_per_epoch_counts_like_lightning(args: tuple, expected: int) -> None:
    assert steps_per_epoch(*args) == expected


def test_epochs_for_steps_rounds_up_with_a_floor_of_one() -> None:
    assert epochs_for_steps(400, 4) == 100
    assert epochs_for_steps(401, 4) == 101
    assert epochs_for_steps(0, 4) == 1


@pytest.mark.parametrize(("call", "match"), [
    (lambda: steps_per_epoch(10, 0), r"batch_size, world_size, accumulate >= 1; got 10, 0"),
    (lambda: steps_per_epoch(10, 4, limit_batches=-1), r"limit_batches=-1 must be >= 0"),
    (lambda: epochs_for_steps(10, 0), r"per_epoch=0; the train loader has no batches"),
    (lambda: epochs_for_steps(-1, 3), r"min_steps=-1 must be >= 0"),
    (lambda: still_improving([1, 2, 3], mode="up"), r"mode='up'"),
    (lambda: still_improving([1, 2, 3], tail=1.5), r"tail=1.5 must be in \(0, 1\)"),
])
def test_errors_name_the_value(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_still_improving() -> None:
    assert still_improving([1.0, 0.8, 0.6, 0.5, 0.4])            # best at the end, falling
    assert not still_improving([1.0, 0.5, 0.4, 0.41, 0.42])      # turned
    assert not still_improving([1.0, 0.5, 0.4, 0.4, 0.3999])     # flat: gain below 1 %
    assert not still_improving([1.0, 0.9])                       # too few points
    assert not still_improving([1.0, float("nan"), 0.5])         # a diverged epoch is no improvement
    assert still_improving([0.5, 0.7, 0.9], mode="max")


def test_predicts_one_class() -> None:
    assert predicts_one_class([0, 120, 0]) == 1
    assert predicts_one_class([3, 97, 0]) == 1                   # 97 % of the predictions
    assert predicts_one_class([30, 40, 30]) is None
    assert predicts_one_class([0, 0]) is None
