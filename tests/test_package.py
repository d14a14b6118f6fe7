"""The public names of ``lightkit`` and ``lightkit.callbacks`` resolve, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lightkit
import lightkit.callbacks


@pytest.mark.parametrize("module", [lightkit, lightkit.callbacks])
def test_every_exported_name_resolves(module: object) -> None:
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(dir(module)) == set(module.__all__)


def test_callbacks_resolve_in_yaml_class_paths() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch import Callback

    parser = ArgumentParser()
    parser.add_argument("--cb", type=Callback)
    cfg = parser.parse_args(['--cb={"class_path": "lightkit.callbacks.EMA", "init_args": {"decay": 0.9}}'])
    assert parser.instantiate_classes(cfg).cb.__class__.__name__ == "EMA"


def test_unknown_names_raise() -> None:
    with pytest.raises(AttributeError, match="module 'lightkit' has no attribute 'Nope'"):
        _ = lightkit.Nope  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="module 'lightkit.callbacks' has no attribute 'Nope'"):
        _ = lightkit.callbacks.Nope  # type: ignore[attr-defined]


def test_functional_imports_no_lightning() -> None:
    code = "import sys, lightkit.functional; print('lightning' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
