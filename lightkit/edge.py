"""The command line's edge: every error ends here as one ``error:`` line on stderr and an exit code.

Library code raises typed exceptions with the full message (component, bad value, fix); this module
turns them, jsonargparse's parse and instantiation errors and the common Lightning / torch /
safetensors start-up errors into one line, as git and cargo do. The traceback is printed only with
``LIGHTKIT_DEBUG=1``. Exit codes: 2 for a bad input (config, argument, file), 1 for a run that failed
(a diverged fit with no good checkpoint) or an unexpected internal error, 130 for Ctrl-C.

It also silences the start-up noise that comes before the first useful line (Lightning's warning
about ``args`` and ``sys.argv``, its litlogger / litmodels tips, a torch deprecation inside Lightning,
W&B's "anonymous" warning), and only while a command runs from the edge.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "RunFailed",
    "UsageError",
    "close_matches",
    "debug_enabled",
    "one_line",
    "run_at_edge",
]

T = TypeVar("T")
EXIT_USAGE = 2
EXIT_FAILED = 1
DEBUG_ENV = "LIGHTKIT_DEBUG"

# Warnings that come before the first useful line and say nothing the user can act on.
_NOISE_WARNINGS = (
    r"LightningCLI's args parameter is intended",
    r".*isinstance\(treespec, LeafSpec\)",
    r"The anonymous setting has no effect",
)
_NOISE_LOG_PREFIXES = ("💡 Tip:", "Seed set to")  # the seed is in the run's config.yaml


class UsageError(ValueError):
    """A bad input found by the CLI itself (command, config file, argument); the message is the line."""


class RunFailed(RuntimeError):
    """The command ran but its result is unusable (e.g. a fit that diverged before any good checkpoint)."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def close_matches(word: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` closest to ``word`` by edit distance (difflib's ratio, cutoff 0.6)."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)


# -- the one line ------------------------------------------------------------------------------
def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return chain


def _from_lightkit(err: BaseException) -> bool:
    """Raised by lightkit code (its class or the innermost frame of its traceback lives in lightkit)."""
    if type(err).__module__.startswith("lightkit"):
        return True
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and f"{os.sep}lightkit{os.sep}" in last.tb_frame.f_code.co_filename


# jsonargparse wraps an error of a class's __init__ in lines such as 'Problem with given class_path
# "...":', 'Parser key "model":', 'Given value type: ...', 'Given value: Namespace(...)'.
_WRAPPER_LINE = re.compile(
    r"^\s*(Problem with given class_path|Parser key|Given value|Does not validate against any|Expected a|"
    r"Not a valid subclass|Subclass types expect|- |Validation failed: Key)",
)
_ARGPARSE_KEY = re.compile(r'(?:Parser key|Key) "([^"]+)"')


def _clean(message: str) -> str:
    """The informative line(s) of a message, joined into one line."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not _WRAPPER_LINE.match(ln)]
    text = " ".join(useful or lines[:1])
    text = re.sub(r"\s+", " ", text).strip()
    return text


def _jsonargparse_line(err: BaseException) -> str:
    """jsonargparse's message reduced to the key and the innermost reason."""
    raw = str(err)
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    keys = _ARGPARSE_KEY.findall(raw)
    # The innermost reason is the last line that is not a wrapper nor a value dump.
    reasons = [ln for ln in lines if not _WRAPPER_LINE.match(ln)]
    reason = reasons[-1] if reasons else (lines[-1] if lines else type(err).__name__)
    reason = re.sub(r"\s+", " ", reason)
    key = keys[-1] if keys else ""
    if key and key not in reason:
        return f"{key}: {reason}"
    return reason


_NOT_ACCEPTED = re.compile(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (--(\w+)\.([\w.]+))")


def _import(class_path: str) -> Any:
    try:
        module, name = class_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    except (ValueError, ImportError, AttributeError):
        return None


def _parameters(cls: Any) -> list[str]:
    try:
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _unknown_key_line(text: str) -> str | None:
    """An unknown key, with the close matches among the parameters of the class it was meant for."""
    found = _NOT_ACCEPTED.search(text)
    if found:
        class_path, key = found.groups()
        choices = _parameters(_import(class_path))
        near = close_matches(key, choices)
        keys = re.findall(r'Parser key "(\w+)"', text)
        section = keys[0] if keys else "model"
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        return (f"{section}.init_args.{key}: {class_path.rsplit('.', 1)[-1]} has no argument {key!r}; {hint}"
                f"see `python cli.py fit --{section}.help {class_path}`.")
    found = _UNRECOGNIZED.search(text)
    if found:
        option, section, key = found.groups()
        from lightning.pytorch import Trainer

        choices = _parameters(Trainer) if section == "trainer" else []
        near = close_matches(key, choices)
        hint = f"did you mean {' or '.join(f'--{section}.{n}' for n in near)}? " if near else ""
        return f"unknown option {option}; {hint}`python cli.py fit --help` lists the options."
    return None


# Known messages of torch / Lightning at start-up or resume, said in lightkit's terms.
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Tried to step (\d+) times\. The specified number of total steps is (\d+)"),
     "OneCycleLR: the schedule was built for {1} optimizer steps and step {0} was asked for; resume with the same "
     "trainer.max_epochs / max_steps as the interrupted run, or start a new fit with the longer budget."),
    (re.compile(r"Weights only load failed"),
     "the file is not a checkpoint torch can load safely (weights_only); give a .ckpt written by fit, or a weights "
     "file as model.init_args.pretrained."),
)


def one_line(err: BaseException) -> str:
    """The message to show for ``err``: the lightkit message in its chain if there is one, else the
    innermost cause's, without jsonargparse's wrappers and value dumps; always one line."""
    chain = _chain(err)
    text = "\n".join(str(item) for item in chain)
    unknown = _unknown_key_line(text)
    if unknown:
        return unknown
    for pattern, template in _KNOWN:
        found = pattern.search(text)
        if found:
            return template.format(*found.groups())
    for item in chain:
        if isinstance(item, (UsageError, RunFailed)) or (_from_lightkit(item) and not _is_wrapper(item)):
            return _clean(str(item)) or type(item).__name__
    root = chain[-1]
    if isinstance(root, ZeroDivisionError) and _raised_in(root, "OneCycleLR"):
        return ("OneCycleLR: pct_start x total_steps is exactly 1 optimizer step, which torch cannot schedule "
                "(division by zero); change trainer.max_steps / max_epochs, or lr_scheduler.init_args.pct_start.")
    if type(root).__name__ == "MisconfigurationException":
        return f"Lightning: {_clean(str(root))}"
    if type(root).__module__.startswith("jsonargparse") or type(err).__module__.startswith("jsonargparse"):
        return _jsonargparse_line(root if type(root).__module__.startswith("jsonargparse") else err)
    text = _clean(str(root))
    return f"{type(root).__name__}: {text}" if text else type(root).__name__


def _raised_in(err: BaseException, class_name: str) -> bool:
    """Whether a frame of ``err``'s traceback runs a method of an object of class ``class_name``."""
    tb = err.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and type(owner).__name__ == class_name:
            return True
        tb = tb.tb_next
    return False


def _is_wrapper(err: BaseException) -> bool:
    """An exception that only re-wraps another (jsonargparse's instantiation wrapper)."""
    return type(err).__module__.startswith("jsonargparse")


_BAD_INPUT = (ValueError, TypeError, KeyError, LookupError, OSError, RuntimeError)


def exit_code(err: BaseException) -> int:
    if isinstance(err, RunFailed):
        return EXIT_FAILED
    if type(err).__module__.startswith("jsonargparse") or isinstance(err, argparse.ArgumentError):
        return EXIT_USAGE
    if type(err).__name__ == "MisconfigurationException":  # Lightning's "this setting cannot work"
        return EXIT_USAGE
    if any(isinstance(item, _BAD_INPUT) for item in _chain(err)):
        return EXIT_USAGE
    if isinstance(err, ZeroDivisionError) and _raised_in(err, "OneCycleLR"):
        return EXIT_USAGE
    return EXIT_FAILED


# -- running at the edge -----------------------------------------------------------------------
class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_NOISE_LOG_PREFIXES)


@contextmanager
def quiet_start() -> Iterator[None]:
    """Silence the known start-up noise (warnings and log tips) for the duration of a command."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch.utilities.rank_zero",
                                                    "lightning.fabric.utilities.rank_zero",
                                                    "lightning.fabric.utilities.seed")]
    tip_filter = _DropTips()
    for logger in loggers:
        logger.addFilter(tip_filter)
    with warnings.catch_warnings():
        for pattern in _NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(tip_filter)


def run_at_edge(fn: Callable[[], T]) -> T:
    """Run ``fn`` (a whole command); any exception becomes one stderr line and ``SystemExit``.

    ``SystemExit`` (``--help``, a command's own exit code) passes through. With ``LIGHTKIT_DEBUG=1`` the
    exception propagates with its traceback.
    """
    try:
        with quiet_start():
            return fn()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException as err:  # noqa: BLE001 - the edge: everything ends here
        if debug_enabled():
            raise
        code = exit_code(err)
        message = one_line(err)
        if code == EXIT_FAILED and not isinstance(err, RunFailed):
            message += f" (unexpected {type(err).__name__}: rerun with {DEBUG_ENV}=1 for the traceback and report it)"
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
