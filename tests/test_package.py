"""The public API: every exported name is what its table says, every table is complete, imports stay lazy."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest
from lightning.pytorch import Callback

import lightkit
import lightkit.callbacks
import lightkit.functional
import lightkit.lr_schedulers
import lightkit.search

PACKAGES = [lightkit, lightkit.callbacks, lightkit.functional, lightkit.search, lightkit.lr_schedulers]


@pytest.mark.parametrize("module", PACKAGES, ids=lambda m: m.__name__)
def test_every_exported_name_is_itself(module: ModuleType) -> None:
    """A class or function is exported under its own name, from inside lightkit (a wrong table entry, a
    renamed function or a stale alias fails here; ``is not None`` could not)."""
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__name__ == name, f"{module.__name__}.{name} is {obj.__module__}.{obj.__name__}"
            assert obj.__module__.startswith("lightkit."), (
                f"{module.__name__}.{name} comes from {obj.__module__}"
            )
    if "__dir__" in vars(module):  # the lazy packages list exactly their exports
        assert set(dir(module)) == set(module.__all__)


def test_functional_reexports_every_public_function() -> None:
    table = lightkit.functional._EXPORTS
    for info in pkgutil.iter_modules(lightkit.functional.__path__):
        sub = importlib.import_module(f"lightkit.functional.{info.name}")
        missing = [n for n in sub.__all__ if table.get(n) != info.name]
        assert not missing, (
            f"lightkit.functional does not re-export {info.name}.{missing}: add them to _EXPORTS"
        )
    for name, sub in table.items():
        assert name in importlib.import_module(f"lightkit.functional.{sub}").__all__, (
            f"{name} is not public in {sub}"
        )


def test_every_callback_class_is_exported() -> None:
    """The contract suite discovers callbacks through lightkit.callbacks.__all__: one left out goes
    unchecked."""
    exported = {getattr(lightkit.callbacks, n) for n in lightkit.callbacks.__all__}
    for info in pkgutil.iter_modules(lightkit.callbacks.__path__):
        if info.name.startswith("_"):
            continue
        sub = importlib.import_module(f"lightkit.callbacks.{info.name}")
        for name, obj in vars(sub).items():
            if (inspect.isclass(obj) and issubclass(obj, Callback) and obj.__module__ == sub.__name__
                    and not name.startswith("_")):
                assert obj in exported, (
                    f"lightkit.callbacks.{info.name}.{name} is not in lightkit.callbacks.__all__"
                )


def test_callbacks_resolve_in_yaml_class_paths() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--cb", type=Callback)
    cfg = parser.parse_args(['--cb={"class_path": "lightkit.callbacks.EMA", "init_args": {"decay": 0.9}}'])
    assert parser.instantiate_classes(cfg).cb.__class__.__name__ == "EMA"


@pytest.mark.parametrize("module", [lightkit, lightkit.callbacks, lightkit.functional, lightkit.search],
                         ids=lambda m: m.__name__)
def test_unknown_names_raise(module: ModuleType) -> None:
    with pytest.raises(AttributeError, match=f"module '{module.__name__}' has no attribute 'Nope'"):
        _ = module.Nope  # type: ignore[attr-defined]


def test_package_imports_stay_lazy() -> None:
    code = ("import sys, lightkit, lightkit.callbacks, lightkit.functional, lightkit.search.rules; "
            "print(*(m in sys.modules for m in ('lightning', 'timm', 'optuna', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "False"]
