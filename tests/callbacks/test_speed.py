"""``SpeedUp``: channels-last and torch.compile applied in setup, same weights and keys; bad arguments refused."""

from __future__ import annotations

import pytest
import torch

from lightkit.callbacks.speed import SpeedUp
from tests.helpers.tiny_fit import tiny_fit, tiny_model


def _convs(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_channels_last_trains_like_contiguous(tmp_path) -> None:
    plain, fast = tiny_model(), tiny_model()
    keys = list(plain.state_dict())
    tiny_fit(plain, [], tmp_path / "a", max_steps=3)
    tiny_fit(fast, [SpeedUp(channels_last=True)], tmp_path / "b", max_steps=3)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in _convs(fast))
    assert not all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in _convs(plain))
    assert list(fast.state_dict()) == keys
    for key, value in plain.state_dict().items():  # the same maths in another memory layout
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_compile_in_place_keeps_state_dict_keys(tmp_path) -> None:
    model = tiny_model()
    keys = list(model.state_dict())
    callback = SpeedUp(channels_last=False, compile=True, compile_backend="eager")  # eager: the wiring, not inductor
    tiny_fit(model, [callback], tmp_path, max_steps=2)
    assert model._compiled_call_impl is not None  # noqa: SLF001 - what nn.Module.compile sets
    assert list(model.state_dict()) == keys  # no "_orig_mod." prefix: checkpoints load into a plain module
    tiny_fit(model, [callback], tmp_path, max_steps=3)  # a second fit does not compile again
    assert len(callback._compiled) == 1  # noqa: SLF001


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"compile": True, "compile_mode": "fastest"}, r"compile_mode='fastest' is not one of"),
    ({"compile_mode": "max-autotune"}, r"compile=False; set compile: true or drop them"),
    ({"compile_backend": "eager"}, r"compile_backend='eager' are set but compile=False"),
])
def test_argument_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpeedUp(**kwargs)
