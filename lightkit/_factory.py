"""Seeing through the factories LightningCLI hands over for ``optimizer`` / ``lr_scheduler``."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["factory_target", "unbound_parameters"]


def factory_target(factory: Any) -> tuple[Any, set[str]]:
    """The class a (jsonargparse / functools) partial will build, and the keywords already bound.

    LightningCLI passes ``partial(instantiator, SchedulerClass, **init_args)``, whose own signature says
    nothing; look through the partials for the class. Keywords bound to ``None`` count as unbound
    (jsonargparse fills every default in), so lightkit may supply them.
    """
    bound: set[str] = set()
    while isinstance(factory, functools.partial):
        bound |= {k for k, v in factory.keywords.items() if v is not None}
        classes = [a for a in factory.args if inspect.isclass(a)]
        factory = classes[0] if classes else factory.func
    return factory, bound


def unbound_parameters(factory: Any) -> set[str]:
    """Constructor parameter names of the factory's target that the factory leaves for the caller."""
    target, bound = factory_target(factory)
    try:
        return _parameters(target) - bound
    except (TypeError, ValueError):
        return set()


def _parameters(target: Any) -> set[str]:
    """Named parameters of ``target``; a class's ``**kwargs`` is followed into its bases' ``__init__``, as
    jsonargparse does for ``super().__init__(..., **kwargs)`` (lightkit's schedulers forward their shared
    tail so)."""
    if not inspect.isclass(target):
        return set(inspect.signature(target).parameters)
    names: set[str] = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters.values()
        names |= {
            p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        }
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names
