"""The pure rules behind ``Diagnose`` and its message table: statistics by name, terms for lightkit or any module."""

from __future__ import annotations

import math
import string

import pytest

from lightkit.functional.diagnose import (
    GENERIC_TERMS,
    LIGHTKIT_TERMS,
    MESSAGES,
    dead_layers,
    exploding_loss,
    gradient_verdict,
    message,
    missing_gradients,
    name_list,
    saturated_layers,
    terms_for,
)


def test_dead_and_saturated_layers_read_statistics_by_name() -> None:
    stats = {"a": {"mean": 0.0, "std": 0.0, "zero": 1.0, "dead": 0.95, "saturated": 0.0},
             "b": {"mean": 0.9, "std": 0.1, "zero": 0.0, "dead": 0.1, "saturated": 0.97},
             "c": {"mean": 0.9, "std": 0.1, "zero": 0.0, "dead": 0.0, "saturated": 0.99}}
    assert dead_layers(stats, 0.9) == ["a 95%"]
    assert saturated_layers(stats, {"a": "relu", "b": "tanh", "c": "relu"}, 0.9) == ["b 97%"]  # relu never saturates


@pytest.mark.parametrize(
    ("norms", "now", "expected"),
    [([3.0, 4.0], 2.0, (None, 5.0)), ([3000.0], 2.0, ("exploding", 3000.0)), ([math.inf], 2.0, ("exploding", math.inf)),
     ([1e-9], 2.0, ("vanishing", 1e-9)), ([1e-9], 0.1, (None, 1e-9))],
    ids=["healthy", "exploding", "infinite", "vanishing", "converged"],
)
def test_gradient_verdict(norms: list[float], now: float, expected: tuple) -> None:
    verdict, total = gradient_verdict(norms, 1e-7, 1000.0, now, 2.3)
    assert verdict == expected[0] and total == pytest.approx(expected[1])


def test_missing_gradients_only_for_trainable_parameters() -> None:
    assert missing_gradients(["w", "b", "frozen", "ok"], [0.0, 1.0, 0.0, 2.0], [True, False, False, True],
                             [True, True, False, True]) == ["w", "b"]


def test_exploding_loss_needs_the_initial_losses_and_the_factor() -> None:
    initial = [2.0] * 10
    assert exploding_loss(201.0, initial, 100.0, 10) and not exploding_loss(199.0, initial, 100.0, 10)
    assert not exploding_loss(1e9, initial[:5], 100.0, 10)  # initial loss not known yet
    assert not exploding_loss(1e9, initial, None, 10) and not exploding_loss(math.nan, initial, 100.0, 10)


def test_every_template_fills_from_both_vocabularies() -> None:
    values = dict(value="nan", step=7, action="stopping", last_good="x.ckpt", factor=1e3, initial=2.3, key="val/loss",
                  count=2, fraction=0.9, layers="a, b", norm=1e4, limit=1.0, loss=2.0, best=0.5, since=3, now=0.9,
                  train_then=1.0, train_now=0.5, cv=0.7, window=50, seen=300)
    for kind, template in MESSAGES.items():
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        assert fields <= set(values) | set(LIGHTKIT_TERMS), kind
        lightkit, generic = message(kind, LIGHTKIT_TERMS, **values), message(kind, GENERIC_TERMS, **values)
        assert "\n" not in lightkit and "init_args" not in generic and "trainer." not in generic, kind
    assert set(LIGHTKIT_TERMS) == set(GENERIC_TERMS)


def test_name_list() -> None:
    assert name_list(["a", "b"]) == "a, b"
    assert name_list([str(i) for i in range(7)]) == "0, 1, 2, 3 and 3 more"


def test_terms_follow_the_config_not_the_package() -> None:
    """A subclass of a lightkit model in the user's own package still takes its LR from the config keys."""

    class MyNet:  # stands for `class MyNet(ImageClassifier)` in mypkg: it has the config's optimizer factory
        optimizer_factory = staticmethod(lambda groups: None)

    class Plain:  # a LightningModule lightkit did not write: its own configure_optimizers
        pass

    assert terms_for(MyNet()) is LIGHTKIT_TERMS and terms_for(Plain()) is GENERIC_TERMS
