"""Hyperparameter search over any key of a lightkit fit config, on Optuna.

    python cli.py search --config configs/search.yaml

Guidance it turns into defaults (CS231n "hyperparameter optimization"; Bergstra & Bengio 2012,
"Random Search for Hyper-Parameter Optimization", https://jmlr.org/papers/v13/bergstra12a.html):
random search rather than a grid, learning rate and weight decay on a log scale, coarse to fine
(many short trials of at most one epoch, then ranges narrowed around the best, then the best few
trained longer), the validation split as the judge, and a warning when the best value sits on the
edge of its range (the optimum may lie outside).

Each trial is an ordinary lightkit fit: :func:`lightkit.cli.main` parses the base config plus dotted
overrides (``--model.init_args.optimizer.init_args.lr=0.003``), so every key the fit config accepts is
searchable, and the trial's full config is dumped next to its metrics. A trial whose training loss or
monitored metric turns NaN/Inf stops at once (state PRUNED, ``status=diverged``); Optuna's median
pruner stops hopeless ones at each validation.

Storage: one Optuna study per stage (``<study_name>/<i>-<stage>``) in SQLite under the run folder, or
any SQLAlchemy URL. Finished trials are committed as they end; a killed worker's running trial is
failed by Optuna's heartbeat after ``grace_period`` seconds and re-queued with the same parameters, so
a search resumes by running the same command again. Several workers on one storage share the work:
each draws its parameters from a sampler seeded by ``(seed, trial number)``, so no two trials repeat
and a single worker is reproducible; stages are barriers (all workers wait for a stage to finish).

Files in ``run_dir``: ``study.db``, ``<stage>/trial_<n>/{config.yaml,metrics.json}``, ``trials.csv``,
``summary.json``, ``best.yaml`` (ready for ``python cli.py fit --config``), ``metric_vs_params.png``,
``stage_narrowing.png``; W&B runs (offline by default) grouped by study name.

The package, in the order data flows: :mod:`~lightkit.search.config` (the YAML schema and its
validation), :mod:`~lightkit.search.rules` (narrowing and border warnings: pure, no Optuna or Lightning),
:mod:`~lightkit.search.result` (what a search returns), :mod:`~lightkit.search.trial` (one fit and its
:class:`TrialMonitor`), :mod:`~lightkit.search.optuna_glue` (storage, seeded sampler, orphaned trials),
:mod:`~lightkit.search.report` (files, plots, W&B summary) and :mod:`~lightkit.search.stages` (the stage
loop, :func:`run_search`). Each module imports only modules listed before it (``tests/test_search.py`` checks
it).
"""

import importlib
from typing import Any

# Names are imported on first use, so ``import lightkit.search.rules`` loads neither Lightning nor Optuna.
_EXPORTS: dict[str, str] = {
    "BorderWarning": "rules",
    "Param": "config",
    "SearchConfig": "config",
    "SearchError": "config",
    "SearchResult": "result",
    "Stage": "config",
    "StageSummary": "result",
    "TrialMonitor": "trial",
    "TrialOutcome": "trial",
    "border_warnings": "rules",
    "export_best_config": "stages",
    "fit_trial": "trial",
    "narrow": "rules",
    "run_search": "stages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lightkit.search.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lightkit.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
