"""``python cli.py prepare --data.init_args.root IMAGES --output SHARDS``: write LitData shards once.

Builds the file data module (an image folder by default, or ``--data.class_path
lightkit.data.CSVDataModule``; ``--config X.yaml`` takes the ``data:`` section of a fit config) and
converts its splits with :func:`lightkit.data.shards.prepare_shards`. Train on the result with
``data: {class_path: lightkit.data.ShardDataModule, init_args: {path: SHARDS}}``. Exit code 0 on
success; otherwise one line on stderr and 1 (the data cannot be converted) or 2 (bad arguments).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["build_parser", "run"]

_DEFAULT_DATA = {"class_path": "lightkit.data.ImageFolderDataModule"}


def build_parser() -> Any:
    """The ``prepare`` parser: the data module's arguments, ``--output`` and the writer's options."""
    from jsonargparse import ArgumentParser

    from lightkit.data.folder import FileImageDataModule

    parser = ArgumentParser(prog="python cli.py prepare", exit_on_error=False,
                            description="Convert an image folder or CSV into LitData shards for many GPUs and nodes.")
    parser.add_argument("--config", type=str | None, default=None,
                        help="A fit config; only its data: section is read.")
    parser.add_subclass_arguments(FileImageDataModule, "data", required=False, default=_DEFAULT_DATA,
                                  help="The image folder / CSV data module whose splits are written.")
    parser.add_argument("--output", type=str, required=True, help="A new folder for the shards.")
    parser.add_argument("--num_workers", type=int | None, default=None,
                        help="Processes that check and write (default: from the CPU count).")
    parser.add_argument("--chunk_bytes", type=str, default="64MB", help="Target size of one chunk file.")
    # The lightkit CLI gives every command a run folder; prepare writes only to --output.
    parser.add_argument("--run_dir", type=str | None, default=None, help="Not used by prepare (it writes to --output).")
    return parser


def _with_config(argv: list[str]) -> list[str]:
    """``--config X.yaml`` -> ``--data <its data section>`` (the rest of a fit config is not ours)."""
    if "--config" not in argv:
        return argv
    import json

    import yaml

    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise ValueError("--config needs a file")
    with open(argv[i + 1]) as f:
        config = yaml.safe_load(f) or {}
    if "data" not in config:
        raise ValueError(f"--config {argv[i + 1]} has no data: section")
    return [*argv[:i], "--data", json.dumps(config["data"]), *argv[i + 2:]]


def run(argv: list[str]) -> int:
    """Run ``prepare``; returns the exit code."""
    from jsonargparse import ArgumentError

    from lightkit.data.errors import DataError
    from lightkit.data.shards import log_prepared, prepare_shards

    parser = build_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(_with_config(argv))
    except (ArgumentError, ValueError, OSError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"prepare: {message}; see `python cli.py prepare --help`.", file=sys.stderr)
        return 2
    try:
        datamodule = parser.instantiate_classes(args).data
    except DataError as err:
        print(f"prepare: {err}", file=sys.stderr)
        return 1
    try:
        meta = prepare_shards(datamodule, args.output, num_workers=args.num_workers, chunk_bytes=args.chunk_bytes)
    except DataError as err:
        print(f"prepare: {err}", file=sys.stderr)
        return 1
    log_prepared(meta, args.output)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"lightkit prepare: wrote {counts} images of {len(meta['class_names'])} classes to {args.output}")
    return 0
