"""``python cli.py export --ckpt PATH --format onnx|torchscript [--fold-bn] [--output PATH]``.

Loads an ``ImageClassifier`` checkpoint, optionally folds its BatchNorm layers, exports it and checks
the written file against PyTorch on real images (sklearn's digits, preprocessed as the checkpoint
says) before keeping it; ``<output>.json`` holds the preprocessing and class names. Needs no config
file, so it parses its own arguments. Exit code 0 on success; otherwise one line on stderr and 1
(export or verification failed) or 2 (bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["build_parser", "run"]

_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class _UsageError(Exception):
    """A bad command line; argparse's own handling would print the usage block and exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``export`` argument parser (also used for ``--help``)."""
    parser = _Parser(
        prog="python cli.py export",
        description="Export a lightkit ImageClassifier checkpoint to ONNX or TorchScript, verified on real images.",
    )
    parser.add_argument("--ckpt", required=True, help="Checkpoint written by `python cli.py fit`.")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"], dest="fmt",
                        help="onnx (opset 17, dynamic batch) or torchscript (torch.jit.trace).")
    parser.add_argument("--fold-bn", action="store_true",
                        help="Fold BatchNorm into the preceding convolutions (faster inference, same outputs).")
    parser.add_argument("--output", default=None,
                        help="Model file; default: the checkpoint path with .onnx / .pt. "
                             "Metadata goes to <output>.json.")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="Max absolute logit difference allowed in each check (default 1e-4).")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="Real images (sklearn digits) in the verification batch (default 8).")
    return parser


def run(argv: list[str]) -> int:
    """Run ``export``; returns the exit code."""
    from lightkit.export import ExportError, digits_example, export_model, load_classifier

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(f"export: {err}; see `python cli.py export --help`.", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    output = Path(args.output) if args.output else Path(args.ckpt).with_suffix(_SUFFIX[args.fmt])
    try:
        model, meta = load_classifier(args.ckpt)
        example = digits_example(meta, args.batch_size)
        result = export_model(model, args.fmt, output, args.fold_bn, example, atol=args.atol, metadata=meta)
    except ExportError as err:
        print(str(err), file=sys.stderr)
        return 1
    folded = f", {len(result.fold.folded)} BN folded" if result.fold is not None else ""
    fold_diff = f", folded vs original {result.fold_max_abs_diff:.2g}" if result.fold_max_abs_diff is not None else ""
    print(f"lightkit export: wrote {result.path} ({result.format}{folded}; max |diff| file vs PyTorch "
          f"{result.export_max_abs_diff:.2g}{fold_diff}, atol {result.atol:g}, "
          f"{result.runtime}) and {result.metadata_path}")
    return 0
