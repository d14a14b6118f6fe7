"""``lightkit.search`` on a real PostgreSQL server: two workers as processes, one killed mid-trial and resumed.

The server is Debian's ``postgresql`` package started in a temporary directory (tests/helpers/postgres.py);
``.ci/run`` installs it when ``initdb`` is missing. Outside CI the test skips, saying why, where the server
binaries are not installed; in CI (``CI=true``) it fails instead.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from lightkit.cli import main
from tests.helpers.postgres import find_pg_bin, postgres_server
from tests.test_search import COMPLETE, FAIL, LR, ROOT, _command, _env, probe_config, write


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL test (.ci/run installs the postgresql package).")
    pytest.skip(reason)


def test_missing_server_skips_with_the_reason_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"initdb, pg_ctl\) not found"):
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"not found; CI must run the PostgreSQL test"):
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable('the psycopg driver is not installed (pip install -e ".[dev]" or "psycopg[binary]")')
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found in $PG_BIN, /usr/lib/postgresql/*/bin "
                     "or PATH: install Debian's postgresql package (apt-get install postgresql)")
    with postgres_server(bin_dir) as url:  # type: ignore[arg-type]
        yield url


def _trials(storage: Any, cfg: dict[str, Any], stage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=f"{cfg['study_name']}/{stage}", storage=storage).get_trials()


def _running_trial_of(storage: Any, cfg: dict[str, Any], pid: int) -> optuna.trial.FrozenTrial | None:
    try:
        trials = _trials(storage, cfg, "1-coarse")
    except KeyError:  # the study does not exist yet
        return None
    return next((t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                 and t.user_attrs.get("worker", "").endswith(f":{pid}")), None)


@pytest.mark.slow
def test_two_workers_on_postgres_survive_a_killed_worker(postgres_url: str, tmp_path: Path) -> None:
    budget = 6
    space = {LR: {"type": "loguniform", "low": 1e-3, "high": 1.0},
             "model.init_args.optimizer.init_args.weight_decay": {"type": "uniform", "low": 0.0, "high": 0.01}}
    stages = [{"name": "coarse", "n_trials": budget, "max_epochs": 1, "limit_train_batches": 20},
              {"name": "final", "retrain_top": 1, "max_epochs": 1, "limit_train_batches": 20}]
    cfg = probe_config(tmp_path, space, stages, storage=postgres_url, study_name="pg", pruner_startup_trials=100)
    path = write(tmp_path / "search.yaml", cfg)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(_command(path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    storage = optuna.storages.RDBStorage(postgres_url)  # one engine: a new one per poll would leak connections
    killed, other = start(), start()
    deadline, victim = time.monotonic() + 240, None
    while time.monotonic() < deadline and killed.poll() is None and victim is None:
        time.sleep(0.2)
        victim = _running_trial_of(storage, cfg, killed.pid)
    assert victim is not None and killed.poll() is None, "worker 1 never ran a trial"
    killed.send_signal(signal.SIGKILL)  # in the middle of its trial: claimed, fitting, not yet told
    killed.wait(30)
    resumed = start()  # the same command again, as a user resumes
    errors = []
    for proc in (other, resumed):
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("a worker waited at the stage barrier for ever") from None
        errors.append(err.decode()[-2000:])
        assert proc.returncode == 0, errors[-1]

    coarse = _trials(storage, cfg, "1-coarse")
    assert sorted(t.number for t in coarse) == list(range(len(coarse)))  # numbers unique and contiguous
    assert {t.state for t in coarse} == {COMPLETE, FAIL}  # nothing left running or waiting
    failed = [t for t in coarse if t.state == FAIL]
    complete = [t for t in coarse if t.state == COMPLETE]
    assert [t.number for t in failed] == [victim.number]  # only the killed trial failed ...
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params  # ... and ran again once, same parameters
    assert budget <= len(complete) <= budget + 1  # the budget (one extra at most: workers racing at the end)
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)  # no trial done twice
    assert len({t.user_attrs["trial_dir"] for t in complete}) == len(complete)
    workers = {t.user_attrs["worker"].rpartition(":")[2] for t in coarse}
    assert str(other.pid) in workers and str(killed.pid) in workers  # both shared the work

    # the stage barrier released: the final stage retrained the best coarse trial exactly once
    final = _trials(storage, cfg, "2-final")
    assert [t.state for t in final] == [COMPLETE]
    best_coarse = max(complete, key=lambda t: t.value)
    assert final[0].user_attrs["retrain_of"] == best_coarse.number and final[0].params == best_coarse.params

    run = Path(cfg["run_dir"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["storage"] == postgres_url and summary["best_stage"] == "final"
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(final[0].params[LR])
    cli = main(["fit", "--config", str(run / "best.yaml"), "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                f"--trainer.default_root_dir={tmp_path / 'refit'}", "--test_after_fit=false"])
    assert cli.trainer.global_step == 3 and math.isfinite(float(cli.trainer.callback_metrics["val/acc"]))
