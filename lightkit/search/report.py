"""Outputs of a search: ``trials.csv``, ``summary.json``, the trial table, the PNG plots and the W&B study
summary.

Reads a finished :class:`~lightkit.search.result.SearchResult`; imports nothing of the stage loop, which
calls :func:`write_outputs` at its end.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightkit.plotting import axes_grid, color_cycle, save_figure
from lightkit.search.config import SearchConfig
from lightkit.search.result import SearchResult

__all__ = [
    "log_wandb_summary",
    "plot_metric_vs_params",
    "plot_stage_narrowing",
    "trials_table",
    "write_outputs",
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(config: SearchConfig, result: SearchResult, limit: int | None = None) -> Any:
    """A rich table of the trials, best first within each stage."""
    from rich.table import Table

    table = Table(title=f"lightkit search {config.study_name!r}: {config.metric} ({config.direction})")
    for column in ("stage", "#", "status", config.metric, *config.space, "epochs", "s"):
        table.add_column(column, overflow="fold")
    sign = -1.0 if config.direction == "maximize" else 1.0
    best = (result.best_stage, result.best_params)
    for stage in config.stages:
        rows = [r for r in result.trials if r["stage"] == stage.name]
        rows.sort(key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0), r["number"]))
        for r in rows[:limit]:
            mark = "[bold green]" if (r["stage"], r["params"]) == best and r["status"] == "complete" else ""
            table.add_row(r["stage"], str(r["number"]), r["status"],
                          f"{mark}{r['value']:.4f}" if r["value"] is not None else "-",
                          *[_fmt(r["params"].get(k, "")) for k in config.space],
                          _fmt(r["epochs"] if r["epochs"] is not None else "-"),
                          f"{r['seconds']:.1f}" if r["seconds"] is not None else "-")
    return table


def write_outputs(config: SearchConfig, result: SearchResult) -> None:
    """Write ``trials.csv``, ``summary.json``, the two PNGs and (with ``config.wandb``) the W&B summary
    run."""
    run_dir = result.run_dir
    keys = list(config.space)
    with open(run_dir / "trials.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stage", "number", "state", "status", "value", *keys, "epochs", "seconds", "worker"])
        for r in result.trials:
            writer.writerow([r["stage"], r["number"], r["state"], r["status"], r["value"],
                             *[r["params"].get(k) for k in keys], r["epochs"], r["seconds"], r["worker"]])
    summary = {
        "study_name": config.study_name,
        "storage": result.storage,
        "metric": config.metric,
        "direction": config.direction,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "best_stage": result.best_stage,
        "best_config": str(result.best_config) if result.best_config else None,
        "stages": [asdict(s) for s in result.stages],
        "seconds": result.seconds,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plots = [plot_metric_vs_params(config, result, run_dir / "metric_vs_params.png"),
             plot_stage_narrowing(config, result, run_dir / "stage_narrowing.png")]
    if config.wandb:
        log_wandb_summary(config, result, [p for p in plots if p is not None])


def plot_metric_vs_params(config: SearchConfig, result: SearchResult, path: Path) -> Path | None:
    """One panel per parameter: the metric of every finished trial against the parameter's value,
    coloured by stage (log axis where the parameter is log-scaled; pruned trials as crosses at their
    last reported value)."""
    if not result.trials:
        return None
    fig, axes = axes_grid(len(config.space))
    colors = color_cycle()
    for ax, (key, param) in zip(axes, config.space.items(), strict=True):
        labels = [str(c) for c in param.choices or []]
        for i, stage in enumerate(config.stages):
            for pruned in (False, True):
                xs, ys = [], []
                for r in result.trials:
                    if r["stage"] != stage.name or key not in r["params"]:
                        continue
                    value = r["value"]
                    if pruned and r["status"] == "pruned" and r.get("values"):
                        value = r["values"][-1]
                    if value is None or (r["status"] != "complete") != pruned:
                        continue
                    x = r["params"][key]
                    xs.append(labels.index(str(x)) if param.type == "categorical" else x)
                    ys.append(value)
                if xs:
                    ax.scatter(xs, ys, color=colors[i % len(colors)], marker="x" if pruned else "o", s=28,
                               alpha=0.85, label=None if pruned else stage.name)
        if result.best_params.get(key) is not None and param.numeric:
            ax.axvline(result.best_params[key], color="k", lw=0.8, ls="--")
        if param.is_log:
            ax.set_xscale("log")
        if param.type == "categorical":
            ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_xlabel(key.split(".")[-1] + (" (log)" if param.is_log else ""))
        ax.set_ylabel(config.metric)
        ax.set_title(key, fontsize=8)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[1]:  # none when every trial diverged
        axes[0].legend(fontsize=8)
    fig.suptitle(f"search {config.study_name}: {config.metric} per trial (o complete, x pruned)", fontsize=9)
    return save_figure(fig, path)


def plot_stage_narrowing(config: SearchConfig, result: SearchResult, path: Path) -> Path | None:
    """One panel per numeric parameter: the range each stage sampled (bar), its trials (dots) and
    its best value (star), stages top to bottom."""
    numeric = [k for k, p in config.space.items() if p.numeric]
    if not numeric or not result.stages:
        return None
    fig, axes = axes_grid(len(numeric))
    n = len(result.stages)
    for ax, key in zip(axes, numeric, strict=True):
        param = config.space[key]
        for i, stage in enumerate(result.stages):
            y = n - 1 - i
            rng = stage.space.get(key, {})
            ax.plot(
                [rng.get("low"), rng.get("high")],
                [y, y],
                lw=6,
                alpha=0.35,
                color="tab:blue",
                solid_capstyle="butt",
            )
            xs = [r["params"][key] for r in result.trials if r["stage"] == stage.name and key in r["params"]]
            ax.scatter(xs, [y] * len(xs), s=12, color="tab:blue")
            if key in stage.best_params:
                ax.scatter([stage.best_params[key]], [y], marker="*", s=140, color="tab:red", zorder=3)
        ax.set_yticks(range(n), [s.name for s in reversed(result.stages)])
        if param.is_log:
            ax.set_xscale("log")
        ax.set_title(key, fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"search {config.study_name}: range per stage (bar), trials (dots), best (star)", fontsize=9)
    return save_figure(fig, path)


def log_wandb_summary(config: SearchConfig, result: SearchResult, plots: list[Path]) -> str | None:
    """One W&B run (tag ``search-summary``) in the study's group: the trial table, the plots,
    the best parameters and value. Offline unless ``WANDB_MODE=online``. Returns the run folder."""
    import os

    from lightkit.loggers import WandbLogger

    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return None
    logger = WandbLogger(project=config.wandb_project, name=f"{config.study_name}-summary",
                         save_dir=str(result.run_dir), group=config.study_name, tags=["search-summary"],
                         reuse_active_run=False)
    run = logger.experiment
    import wandb

    keys = list(config.space)
    table = wandb.Table(columns=["stage", "number", "status", "value", *keys])
    for r in result.trials:
        table.add_data(
            r["stage"], r["number"], r["status"], r["value"], *[str(r["params"].get(k)) for k in keys]
        )
    run.log({"search/trials": table, **{f"search/{p.stem}": wandb.Image(str(p)) for p in plots}})
    run.summary.update({"search/best_value": result.best_value, "search/best_stage": result.best_stage,
                        **{f"search/best/{k}": v for k, v in result.best_params.items()},
                        "search/border_warnings": len(result.warnings)})
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
