"""What a search returns: per-stage summaries and the overall result (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkit.search.rules import BorderWarning

__all__ = ["SearchResult", "StageSummary"]


@dataclass
class StageSummary:
    """One stage: the space it sampled (narrowed ranges), counts by outcome, its best trial and warnings."""

    name: str
    study: str
    space: dict[str, dict[str, Any]]
    n_complete: int
    n_pruned: int
    n_diverged: int
    best_value: float | None
    best_params: dict[str, Any]
    warnings: list[str]
    seconds: float


@dataclass
class SearchResult:
    """The outcome of :func:`run_search`: the best trial (of the last stage), per-stage summaries,
    border warnings, and the paths written."""

    best_value: float | None
    best_params: dict[str, Any]
    best_stage: str
    best_config: Path | None
    stages: list[StageSummary]
    trials: list[dict[str, Any]]
    warnings: list[BorderWarning]
    run_dir: Path
    storage: str
    seconds: float
