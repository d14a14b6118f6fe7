"""Checks of the command line that torch and Lightning would let pass: each raises a one-line ``UsageError``.

- before parsing (:func:`check_argv`): a missing or unknown command (with close matches, lightkit's
  own commands included), a missing or empty ``--config`` file, a value for a key the data module
  sets through a link (``model.init_args.num_classes`` ...), which the link would silently replace;
- after parsing (:func:`check_config_values`): a negative or non-finite learning rate in the
  optimizer or the scheduler (torch trains with it: gradient ascent or NaN weights), and
  ``max_epochs: -1`` with no ``max_steps`` for a schedule that needs the run's length;
- at ``test`` / ``validate`` / ``predict`` from a checkpoint (:func:`check_ckpt_overrides`): a
  ``--model...`` value that the checkpoint's own hyperparameters would replace;
- before the parser is built (:func:`int_first_unions`): ``--trainer.limit_train_batches 1`` must
  stay one batch, not 100 % of them, whatever was imported before Lightning.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import operator
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightkit.edge import UsageError, close_matches

__all__ = ["LINKED_KEYS", "check_argv", "check_ckpt_overrides", "check_config_values", "int_first_unions",
           "lightning_commands"]

LINKED_KEYS = ("num_classes", "in_chans", "class_names")


def int_first_unions(function: Any) -> list[str]:
    """Put ``int`` back before ``float`` in the ``Union`` annotations of ``function`` where the order was lost.

    ``typing`` caches ``Optional[Union[...]]`` by set equality: when any module imported earlier (rich
    does, and sklearn imports rich) built ``Optional[Union[float, int]]``, Lightning's
    ``Optional[Union[int, float]]`` for ``limit_train_batches`` *is* that object, jsonargparse tries
    ``float`` first, and ``--trainer.limit_train_batches 1`` becomes ``1.0``: every batch instead of
    one. The annotations are rewritten as ``int | float | None`` (not cached). Returns the names fixed.
    """
    annotations = getattr(function, "__annotations__", {})
    fixed = []
    for name, annotation in list(annotations.items()):
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and int in args and float in args \
                and args.index(float) < args.index(int):
            ordered = sorted(args, key=lambda t: (t is not int, t is not float))
            annotations[name] = functools.reduce(operator.or_, ordered)
            fixed.append(name)
    return fixed


def lightning_commands() -> tuple[str, ...]:
    return ("fit", "validate", "test", "predict")


def _all_commands() -> list[str]:
    from lightkit.commands import COMMANDS

    return [*lightning_commands(), *COMMANDS]


def _config_paths(argv: Sequence[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def _cli_value(argv: Sequence[str], i: int) -> str:
    arg = argv[i]
    if "=" in arg:
        return arg.split("=", 1)[1]
    return argv[i + 1] if i + 1 < len(argv) else ""


def check_argv(argv: Sequence[str]) -> None:
    """Refuse what LightningCLI would answer with a usage dump or accept silently.

    Raises:
        UsageError: no or an unknown command, a missing or empty config file, a linked key set by hand.
    """
    commands = _all_commands()
    if not argv:
        raise UsageError(f"no command given; run one of: {', '.join(commands)} (python cli.py <command> --help).")
    first = argv[0]
    if first in ("-h", "--help"):
        return
    _check_command(first, commands)
    if first not in lightning_commands() and first in ("search", "export"):
        return  # own argument parsers, own checks
    for path in _config_paths(argv):
        _check_config_file(path)
    _check_linked_args(argv)


def _check_command(first: str, commands: list[str]) -> None:
    """An option before the command, or an unknown command (with close matches)."""
    if first in commands:
        return
    if first.startswith("-"):
        raise UsageError(f"{first!r} comes before the command; the command comes first: "
                         f"python cli.py <{'|'.join(commands)}> {first} ...")
    near = close_matches(first, commands)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    raise UsageError(f"unknown command {first!r}; {hint}the commands are: {', '.join(commands)}.")


def _load_config(path: str) -> Any:
    """The YAML content of one ``--config`` file; a missing file or invalid YAML is a ``UsageError``."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--config {path}: no such file (working directory {Path.cwd()}).")
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"--config {path} is not valid YAML{where}: {getattr(err, 'problem', err)}.") from None


def _check_config_file(path: str) -> None:
    """One ``--config`` file: it exists, parses, holds a mapping and sets no linked key by hand."""
    content = _load_config(path)
    if content is None:
        raise UsageError(f"--config {path} is empty; a config needs at least `model:` and `data:` "
                         f"(start from configs/quickstart.yaml).")
    if not isinstance(content, dict):
        raise UsageError(f"--config {path} holds a {type(content).__name__}, not a mapping of keys "
                         f"(`trainer:`, `model:`, `data:` ...).")
    model = content.get("model")
    init = model.get("init_args") if isinstance(model, dict) else None
    for key in LINKED_KEYS:
        if isinstance(init, dict) and init.get(key) is not None:
            _refuse_linked(key, init[key], f"in {path}")


def _check_linked_args(argv: Sequence[str]) -> None:
    """A linked key (``--model.init_args.num_classes`` ...) set on the command line."""
    for i, arg in enumerate(argv):
        for key in LINKED_KEYS:
            if arg.split("=", 1)[0] in (f"--model.init_args.{key}", f"--model.{key}"):
                _refuse_linked(key, _cli_value(argv, i), "on the command line")


def _refuse_linked(key: str, value: Any, where: str) -> None:
    raise UsageError(
        f"model.init_args.{key}={value} {where}: the data module sets {key} (linked from data.{key}) and would "
        f"replace it; remove it and set the data instead (e.g. the class folders, data.init_args.channels)."
    )


def _lr_values(key: str, value: Any) -> list[float]:
    words = key.lower().split("_")
    if "lr" not in words and key not in ("eta_min",):
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool)]


def _class(class_path: Any) -> Any:
    try:
        module, name = str(class_path).rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    except (ValueError, ImportError, AttributeError):
        return None


def check_config_values(cfg: Any) -> None:
    """Values torch and Lightning accept but that cannot be meant (see the module docstring).

    Raises:
        UsageError: a negative / non-finite LR, or an endless run for a schedule that needs its length.
    """
    model = cfg.get("model")
    init = model.get("init_args") if hasattr(model, "get") else None
    if init is None or not hasattr(init, "get"):
        return
    for part in ("optimizer", "lr_scheduler"):
        spec = init.get(part)
        args = spec.get("init_args") if hasattr(spec, "get") else None
        if args is None or not hasattr(args, "items"):
            continue
        for key, value in args.items():
            for number in _lr_values(key, value):
                if not math.isfinite(number) or number < 0:
                    raise UsageError(
                        f"model.init_args.{part}.init_args.{key}={value}: a learning rate must be finite and >= 0 "
                        f"(a negative one climbs the loss, NaN or inf poisons the weights); e.g. {key}: 1.0e-3."
                    )
    trainer = cfg.get("trainer") or {}
    scheduler = init.get("lr_scheduler")
    if scheduler is None or not hasattr(scheduler, "get"):
        return
    endless = trainer.get("max_epochs") == -1 and trainer.get("max_steps") in (-1, None)
    cls = _class(scheduler.get("class_path"))
    if endless and cls is not None:
        params = inspect.signature(cls).parameters
        if "total_steps" in params or "steps_per_epoch" in params:
            raise UsageError(
                f"trainer.max_epochs=-1 (no end) with {cls.__name__}, which spreads over the run's length: set "
                f"trainer.max_epochs or trainer.max_steps, or use a schedule without a length (ReduceLROnPlateau)."
            )


def check_ckpt_overrides(argv: Sequence[str], before: dict[str, Any], after: dict[str, Any], ckpt: str) -> None:
    """``--model...`` values given on the command line that the checkpoint's hyperparameters replaced.

    Raises:
        UsageError: naming the key, the value given and the checkpoint's value.
    """
    given = {arg.split("=", 1)[0].removeprefix("--model.").removeprefix("init_args.")
             for arg in argv if arg.startswith("--model.")}
    for key in sorted(given):
        if key in before and key in after and before[key] != after[key]:
            raise UsageError(
                f"model.init_args.{key}={before[key]!r} on the command line, but {ckpt} was trained with "
                f"{key}={after[key]!r} and its value is used; drop the option (the checkpoint defines the model)."
            )
