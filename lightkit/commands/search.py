"""``python cli.py search --config configs/search.yaml``: staged hyperparameter search (lightkit.search).

The search config is its own YAML (see :class:`lightkit.search.SearchConfig`): a base fit config
(``base_config:`` path or ``base:`` embedded), a ``space:`` over dotted fit-config keys, ``stages:``.
Every field can be overridden on the command line (``--storage postgresql://... --study_name s1``);
``--print_config`` prints the resolved search config. Run the same command in N shells / machines on
one storage to have N workers share the study. Exit code 2 on a config error (one line on stderr).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["parser", "run"]


def parser() -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightkit.search import SearchConfig

    p = ArgumentParser(prog="lightkit search", exit_on_error=False,
                       description="Hyperparameter search over any key of a lightkit fit config (Optuna).")
    p.add_argument("--config", action=ActionConfigFile, help="Search config YAML (configs/search.yaml).")
    p.add_class_arguments(SearchConfig, instantiate=False)
    return p


def _check_keys(argv: list[str]) -> None:
    """jsonargparse drops unknown top-level keys of a dataclass's config file silently; name them."""
    from dataclasses import fields
    from pathlib import Path

    import yaml

    from lightkit.search import SearchConfig, SearchError

    valid = [f.name for f in fields(SearchConfig)]
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--config" and Path(value).is_file():
            data = yaml.safe_load(Path(value).read_text()) or {}
            unknown = sorted(set(data) - set(valid)) if isinstance(data, dict) else []
            if unknown:
                raise SearchError(f"search: unknown key(s) {unknown} in {value}; valid keys: {valid}.")


def run(argv: list[str]) -> int:
    from argparse import ArgumentError

    from rich.console import Console

    from lightkit.search import SearchConfig, SearchError, run_search
    from lightkit.search.report import trials_table

    try:
        import optuna  # noqa: F401
    except ImportError:
        print("lightkit search: needs optuna; install it with pip install -e \".[search]\"", file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_SILENT", "true")  # one W&B run per trial: keep its banners out of the table
    p = parser()
    try:
        _check_keys(argv)
        cfg = p.parse_args(argv)
    except (ArgumentError, SearchError) as exc:
        print(f"lightkit search: {' '.join(str(exc).split()).removeprefix('search: ')}", file=sys.stderr)
        return 2
    # Plain dicts: jsonargparse would instantiate class_path entries inside the embedded `base:`.
    options = {k: v for k, v in cfg.as_dict().items() if k not in ("config", "__path__")}
    try:
        config = SearchConfig(**options)
        result = run_search(config)
    except SearchError as exc:
        print(f"lightkit {exc}", file=sys.stderr)
        return 2
    console = Console(width=160)
    console.print(trials_table(config, result))
    for warning in result.warnings:
        console.print(f"[yellow]{warning.message()}[/]")
    best = ", ".join(f"{k}={v}" for k, v in result.best_params.items())
    console.print(f"lightkit search: best {config.metric}={result.best_value} ({result.best_stage}): {best}")
    console.print(f"lightkit search: best config -> {result.best_config} (python cli.py fit --config "
                  f"{result.best_config}); storage {result.storage}; {result.seconds:.0f} s")
    return 0
