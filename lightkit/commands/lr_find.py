"""``python cli.py lr_find --config X.yaml``: the LR range test alone, on the config a user fits with.

Builds model, data and trainer from the config exactly as ``fit`` would, replaces any
:class:`~lightkit.callbacks.lr_range_test.LRRangeTest` in it by one made from the ``lr_find:``
section (``--lr_find.num_steps 50`` ...), runs the sweep (Smith 2017, arXiv:1506.01186) and stops:
no training, no validation. Prints the suggestions (``robust_valley`` by default; ``--lr_find.suggestion
valley`` for fastai's rule) and the ``--model...lr=`` override, warns when a suggestion lies at an edge
of the sweep (with the fix: lower ``start_lr``, more ``num_steps``, higher ``end_lr``), and writes
``lr_find.png`` to the log dir (or ``trainer.default_root_dir``).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["add_arguments", "run"]

# Sweep options a user sets in the ``lr_find:`` section; ``apply`` / ``stop_after`` mean nothing here.
_SKIP = {"apply", "stop_after"}


def add_arguments(parser: LightningArgumentParser) -> None:
    from lightkit.callbacks.lr_range_test import LRRangeTest

    parser.add_class_arguments(LRRangeTest, "lr_find", instantiate=False, skip=_SKIP,
                               help="Options of `lr_find` (the LR range test).")


def run(argv: list[str]) -> int:
    from lightkit.callbacks.lr_range_test import LRRangeTest
    from lightkit.cli import LightkitCLI

    # Only the sweep runs: no sanity validation before it (the fit stops right after it).
    cli = LightkitCLI(args=[*argv, "--trainer.num_sanity_val_steps=0"], run=False, seed_everything_default=0,
                      auto_configure_optimizers=False)
    options: dict[str, Any] = {k: v for k, v in dict(cli.config.lr_find).items() if k not in _SKIP}
    callback = LRRangeTest(**options, stop_after=True)
    trainer = cli.trainer
    trainer.callbacks[:] = [cb for cb in trainer.callbacks if not isinstance(cb, LRRangeTest)] + [callback]
    trainer.fit(cli.model, datamodule=cli.datamodule)
    if callback.results is None:  # pragma: no cover - the fit raised or was interrupted before the sweep
        return 1
    return 0
