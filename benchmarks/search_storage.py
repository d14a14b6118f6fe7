"""Wall time per search trial on SQLite vs a real PostgreSQL server (issue 19, part 2).

One worker, in process, runs the same one-stage search (``n_trials`` trials of the softmax-regression
probe on 8x8 digits, tests/helpers/search_probe.py, 1 epoch of 10 batches: trials short enough that the
storage's share shows) on ``sqlite:///<run>/study.db`` and on ``postgresql+psycopg://`` to a server
started from Debian's ``postgresql`` package in a temporary directory (tests/helpers/postgres.py), with
``fsync=on`` as a production server (SQLite also syncs each commit).
Storages alternate, ``--repeats`` times each, so machine load hits both alike. Per trial: the stage's
wall time / trials, and the median of the trials' own fit seconds (the rest is storage + Optuna +
building the CLI). Then the storage alone: ``--bare`` trials of a no-op objective through Optuna's
``RDBStorage`` with lightkit's heartbeat settings, in milliseconds per trial.

    nice -n 5 python benchmarks/search_storage.py              # 8 trials x 3 repeats x 2 storages
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: the probe model and the server fixture
for key, value in {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(key, value)

import torch  # noqa: E402

from lightkit.search import SearchConfig, run_search  # noqa: E402
from tests.helpers.postgres import find_pg_bin, postgres_server  # noqa: E402

LR = "model.init_args.optimizer.init_args.lr"
PROBE = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_checkpointing": False,
                "num_sanity_val_steps": 0, "log_every_n_steps": 1},
    "model": {"class_path": "tests.helpers.search_probe.PixelProbe",
              "init_args": {"image_size": 8,
                            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}}},
    "data": {"class_path": "lightkit.data.DigitsDataModule",
             "init_args": {"batch_size": 32, "image_size": 8, "val_fraction": 0.3}},
}


def one(storage: str | None, run_dir: Path, name: str, n_trials: int) -> tuple[float, float]:
    config = SearchConfig(base=PROBE, run_dir=str(run_dir), study_name=name, wandb=False, storage=storage,
                          space={LR: {"type": "loguniform", "low": 1e-3, "high": 1.0}},
                          stages=[{"name": "coarse", "n_trials": n_trials, "max_epochs": 1, "limit_train_batches": 10}],
                          pruner_startup_trials=100)
    result = run_search(config)
    stage = result.stages[0]
    assert stage.n_complete == n_trials, stage
    return stage.seconds / n_trials, statistics.median(float(r["seconds"]) for r in result.trials)


def bare(url: str, n_trials: int) -> float:
    """Seconds per trial of a no-op objective: ask, one suggestion, a user attribute, heartbeat, tell."""
    import time

    import optuna

    storage = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    study = optuna.create_study(storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", "bench")
        return trial.suggest_float("lr", 1e-3, 1.0, log=True)

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    seconds = (time.perf_counter() - t0) / n_trials
    storage.engine.dispose()
    return seconds


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare", type=int, default=200, help="no-op trials per storage and repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("search_storage: no initdb / pg_ctl found; apt-get install postgresql")
    print(f"start: {uptime()}", flush=True)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    bare_ms: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp, postgres_server(bin_dir, durable=True) as url:
        print(f"server: {bin_dir} -> {url}", flush=True)
        for rep in range(args.repeats):
            order = ["sqlite", "postgresql"] if rep % 2 == 0 else ["postgresql", "sqlite"]
            for kind in order:
                wall, fit = one(None if kind == "sqlite" else url, Path(tmp) / f"{kind}{rep}", f"s{rep}", args.trials)
                rows[kind].append((wall, fit))
                print(f"{kind:10s} repeat={rep} wall_per_trial_s={wall:.2f} median_fit_s={fit:.2f}", flush=True)
            for kind in order:
                db = f"sqlite:///{Path(tmp) / f'bare{rep}.db'}" if kind == "sqlite" else url
                bare_ms[kind].append(1000 * bare(db, args.bare))
                print(f"{kind:10s} repeat={rep} bare_ms_per_trial={bare_ms[kind][-1]:.1f}", flush=True)
    print(f"end: {uptime()}")
    print("\n| storage | search wall s / trial (median; each repeat) | trial fit s (median) | rest s (median of "
          "wall - fit) | storage alone, ms / no-op trial (median; each repeat) |")
    print("|---|---:|---:|---:|---:|")
    for kind, values in rows.items():
        wall = statistics.median(v[0] for v in values)
        fit = statistics.median(v[1] for v in values)
        rest = statistics.median(v[0] - v[1] for v in values)
        ms = bare_ms[kind]
        print(f"| {kind} | {wall:.2f} ({', '.join(f'{v[0]:.2f}' for v in values)}) | {fit:.2f} | {rest:.2f} | "
              f"{statistics.median(ms):.1f} ({', '.join(f'{m:.1f}' for m in ms)}) |")


if __name__ == "__main__":
    main()
