"""Does the LR range test land? LR grids (accuracy by LR, several seeds) against every suggestion rule.

    python benchmarks/lr_grid.py                      # run all setups, write benchmarks/lr_grid_results.json,
                                                      # print tables
    python benchmarks/lr_grid.py --table-only         # recompute the tables from the JSON (no training)
    python benchmarks/lr_grid.py --setups mnist_sgd   # one setup

For each setup (data, model, optimizer, constant LR, batch 64, 32 px, a fixed number of epochs) the script
trains every LR of a half-decade grid with each seed and measures test accuracy; then, per seed, it runs
:class:`~lightkit.callbacks.lr_range_test.LRRangeTest` with its default sweep (1e-7 .. 10, 100 steps) on the
same freshly initialised model, data and optimizer and records the raw losses. The suggestion rules of
:mod:`lightkit.functional.lr_suggest` are applied to the recorded curves offline (``--table-only``), so a
rule can be changed without training again.

The good band of a setup: the LRs at which the seed-mean test accuracy, interpolated linearly in log LR
between grid points, is within ``--band`` (2) points of the grid's best seed-mean accuracy. A suggestion
outside the grid's range is out of band.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).with_name("lr_grid_results.json")
ASSET = str(Path(__file__).resolve().parents[1] / "lightkit" / "assets" / "mnist5k_resnet10t.safetensors")
HALF_DECADE = [1e-5, 3.2e-5, 1e-4, 3.2e-4, 1e-3, 3.2e-3, 1e-2, 3.2e-2, 0.1, 0.32, 1.0]

# name: data module, pretrained weights, optimizer, grid, epochs. The first is the grid of issue 16.
SETUPS: dict[str, dict[str, Any]] = {
    "mnist_sgd": {"data": "mnist5k", "pretrained": False, "optimizer": "sgd", "grid": HALF_DECADE[4:9], "epochs": 2},
    "mnist_adamw": {"data": "mnist5k", "pretrained": False, "optimizer": "adamw", "grid": HALF_DECADE[2:7],
                    "epochs": 2},
    "digits_ft_sgd": {"data": "digits", "pretrained": ASSET, "optimizer": "sgd", "grid": HALF_DECADE[4:10],
                      "epochs": 2},
    "digits_ft_adamw": {"data": "digits", "pretrained": ASSET, "optimizer": "adamw", "grid": HALF_DECADE[1:7],
                        "epochs": 2},
}
RULES = ("robust_valley", "valley", "steepest", "old steepest", "minimum")


def _optimizer(name: str, lr: float) -> Any:
    import torch

    if name == "sgd":
        return partial(torch.optim.SGD, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return partial(torch.optim.AdamW, lr=lr, weight_decay=0.05)


def _build(setup: dict[str, Any], seed: int, lr: float) -> tuple[Any, Any]:
    from lightning.pytorch import seed_everything

    from lightkit.data import DigitsDataModule, MNIST5kDataModule
    from lightkit.models import ImageClassifier

    seed_everything(seed, verbose=False)
    model = ImageClassifier(encoder="resnet10t", num_classes=10, in_chans=1, pretrained=setup["pretrained"],
                            optimizer=_optimizer(setup["optimizer"], lr))
    cls = MNIST5kDataModule if setup["data"] == "mnist5k" else DigitsDataModule
    return model, cls(batch_size=64, image_size=32, seed=seed)


def _trainer(callbacks: list[Any], **kw: Any) -> Any:
    from lightning.pytorch import Trainer

    return Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
                   default_root_dir="runs/bench_lr_grid", **kw)


def grid_accuracy(setup: dict[str, Any], seed: int, lr: float) -> float:
    """Test accuracy after ``epochs`` epochs at a constant ``lr``."""
    model, dm = _build(setup, seed, lr)
    trainer = _trainer([], max_epochs=setup["epochs"])
    trainer.fit(model, datamodule=dm)
    return float(trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"])


def sweep(setup: dict[str, Any], seed: int) -> dict[str, list[float]]:
    """Raw (lrs, losses) of the default range test on the setup's fresh model."""
    from lightkit.callbacks.lr_range_test import LRRangeTest

    model, dm = _build(setup, seed, 1e-3)
    finder = LRRangeTest(stop_after=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader is cycled on the small sets: expected here
        _trainer([finder], max_epochs=1).fit(model, datamodule=dm)
    assert finder.results is not None
    return {"lrs": finder.results["lrs"], "losses": finder.results["losses"]}


# -- tables -----------------------------------------------------------------------------------------------
def band(grid: list[float], means: list[float], tol: float) -> tuple[float, float]:
    """Widest interval of LRs around the best grid point whose interpolated mean accuracy is within ``tol``."""
    best = max(means)
    floor = best - tol
    i = means.index(best)
    lo, hi = i, i
    while lo > 0 and means[lo - 1] >= floor:
        lo -= 1
    while hi < len(grid) - 1 and means[hi + 1] >= floor:
        hi += 1

    def cross(a: int, b: int) -> float:  # where the log-linear interpolation from a (>= floor) to b hits floor
        t = (means[a] - floor) / (means[a] - means[b])
        return math.exp(math.log(grid[a]) + t * (math.log(grid[b]) - math.log(grid[a])))

    left = cross(lo, lo - 1) if lo > 0 else grid[0]
    right = cross(hi, hi + 1) if hi < len(grid) - 1 else grid[-1]
    return left, right


def suggestions(curve: dict[str, list[float]]) -> dict[str, float]:
    """Every rule on one recorded sweep, as :class:`LRRangeTest` computes them, plus steepest before issue 16."""
    from lightkit.functional import lr_suggest as ls

    lrs, raw = curve["lrs"], curve["losses"]
    smoothed = ls.smooth_losses(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # edge warnings: the table marks the answers instead
        out = ls.suggest(lrs, smoothed, raw=raw)
        out["old steepest"] = ls.steepest(lrs, smoothed, skip_start=0.0)  # the EMA curve, no skip
        out["clr base_lr"], out["clr max_lr"] = ls.clr_bounds(lrs, ls.filter_losses(raw))
    return out


def tables(data: dict[str, Any], tol: float) -> None:
    summary: dict[str, list[int]] = {r: [0, 0] for r in RULES}
    for name, res in data["setups"].items():
        grid = res["grid"]
        acc = {float(k): v for k, v in res["acc"].items()}
        means = [statistics.mean(acc[lr]) for lr in grid]
        lo, hi = band(grid, [100 * m for m in means], tol)
        seeds = sorted(res["sweeps"], key=int)
        print(f"\n### {name}: {res['describe']}")
        print("\n| LR | " + " | ".join(f"seed {s}" for s in sorted(res['acc_seeds'])) + " | mean |")
        print("|---:|" + "---:|" * (len(res["acc_seeds"]) + 1))
        for lr, m in zip(grid, means, strict=True):
            print(f"| {lr:.3g} | " + " | ".join(f"{100 * a:.1f}" for a in acc[lr]) + f" | **{100 * m:.1f}** |")
        print(f"\nband (mean accuracy within {tol:g} points of the best, {100 * max(means):.1f} %): "
              f"[{lo:.2g}, {hi:.2g}]\n")
        print("| rule | " + " | ".join(f"seed {s}" for s in seeds) + " | in band |")
        print("|---|" + "---:|" * (len(seeds) + 1))
        for rule in RULES:
            values = [suggestions(res["sweeps"][s]).get(rule) for s in seeds]
            if any(v is None for v in values):
                continue
            hits = [lo <= v <= hi for v in values]
            summary[rule][0] += sum(hits)
            summary[rule][1] += len(hits)
            cells = [f"{v:.3g}" + ("" if h else " (out)") for v, h in zip(values, hits, strict=True)]
            print(f"| {rule} | " + " | ".join(cells) + f" | {sum(hits)}/{len(hits)} |")
        clr = [suggestions(res["sweeps"][s]) for s in seeds]
        print("| clr base_lr / max_lr | " + " | ".join(f"{c['clr base_lr']:.2g} / {c['clr max_lr']:.2g}" for c in clr)
              + " | |")
    print("\n### all setups\n\n| rule | in band |\n|---|---:|")
    for rule, (hit, total) in summary.items():
        if total:
            print(f"| {rule} | {hit}/{total} |")


def _describe(setup: dict[str, Any]) -> str:
    start = "fine-tuned from mnist5k_resnet10t.safetensors" if setup["pretrained"] else "from scratch"
    opt = "SGD momentum 0.9 Nesterov, wd 5e-4" if setup["optimizer"] == "sgd" else "AdamW, wd 0.05"
    return f"{setup['data']}, resnet10t {start}, 32 px, {opt}, constant LR, batch 64, {setup['epochs']} epochs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=None, help="default: --seeds")
    parser.add_argument("--band", type=float, default=2.0, help="points below the best mean accuracy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--no-grid", action="store_true", help="only sweeps (keep the grids in the JSON)")
    args = parser.parse_args()
    data: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {"setups": {}}
    if not args.table_only:
        import torch

        torch.set_num_threads(args.threads)
        data.setdefault("runs", []).append({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()})
        for name in args.setups:
            setup = SETUPS[name]
            res = data["setups"].setdefault(name, {})
            res.update(describe=_describe(setup), grid=setup["grid"])
            t0 = time.perf_counter()
            if not args.no_grid:
                res["acc"] = {str(lr): [grid_accuracy(setup, s, lr) for s in args.seeds] for lr in setup["grid"]}
                res["acc_seeds"] = args.seeds
                print(name, "grid", {k: [round(a, 3) for a in v] for k, v in res["acc"].items()}, flush=True)
            res.setdefault("sweeps", {})
            for s in args.sweep_seeds or args.seeds:
                res["sweeps"][str(s)] = sweep(setup, s)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {res['seconds']} s", flush=True)
            args.json.write_text(json.dumps(data, indent=1))
    tables(data, args.band)


if __name__ == "__main__":
    main()
