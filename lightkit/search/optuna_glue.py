"""Optuna glue: the storage with heartbeats and retries, the per-trial seeded sampler, and the check
for trials orphaned by a worker that died before their first heartbeat."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightkit.search.config import SearchConfig

log = logging.getLogger("lightkit.search")


def _sampler_for(kind: str, seed: int, study_name: str, number: int) -> Any:
    import optuna

    trial_seed = zlib.crc32(f"{seed}/{study_name}/{number}".encode())
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=trial_seed, n_startup_trials=5, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=trial_seed)


class _PerTrialSeedSampler:
    """Delegates to a sampler seeded by (seed, study, trial number): distinct draws in every worker
    (trial numbers are unique in the storage) and one worker's search is reproducible."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind, self.seed = kind, seed
        self._cache: dict[tuple[str, int], Any] = {}

    def _of(self, study: Any, trial: Any) -> Any:
        key = (study.study_name, trial.number)
        if key not in self._cache:
            self._cache = {key: _sampler_for(self.kind, self.seed, study.study_name, trial.number)}
        return self._cache[key]

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self._of(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._of(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return self._of(study, trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._of(study, trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._of(study, trial).after_trial(study, trial, state, values)


def _make_sampler(kind: str, seed: int) -> Any:
    import optuna

    cls = type("PerTrialSeedSampler", (_PerTrialSeedSampler, optuna.samplers.BaseSampler), {})
    return cls(kind, seed)


def _retry_callback(config: SearchConfig) -> tuple[str, Any]:
    """Optuna's callback that re-queues a dead trial with its parameters, at most ``max_retry`` times,
    and the ``RDBStorage`` argument it goes in."""
    import optuna

    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        return "heartbeat_stale_trial_callback", optuna.storages.RetryHeartbeatStaleTrialCallback(
            config.max_retry
        )
    return "failed_trial_callback", optuna.storages.RetryFailedTrialCallback(config.max_retry)


def _storage(config: SearchConfig) -> Any:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = config.storage_url()
    # A server's pooled connection may have been dropped while a trial trained: check it before use, or
    # Optuna's heartbeat thread can die on its first write and leave a live trial with no heartbeat.
    kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    retry = dict([_retry_callback(config)])
    for attempt in range(5):  # workers starting together may race on creating the tables
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period,
                **retry,
            )
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _ranked(trials: Sequence[Any], direction: str) -> list[Any]:
    import optuna

    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * t.value, t.number))



def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"



CLAIM_ATTR = "claimed_by"


def _claim(number: int) -> str:
    # The trial number is part of the claim: a retried trial inherits the dead one's user attrs.
    return f"{_worker()}#{number}"


def _without_heartbeat(study: Any, trial_ids: Sequence[int]) -> set[int]:
    """The trials among ``trial_ids`` for which the storage holds no heartbeat at all.

    Optuna has no public read of a heartbeat, so this asks its RDB model; on a storage without
    heartbeats, or an Optuna without that model, it answers "none", and only the claim check applies.
    """
    import optuna

    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    try:
        from optuna.storages._rdb.models import TrialHeartbeatModel
    except ImportError:  # pragma: no cover - an Optuna that moved its models
        return set()
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.heartbeat_interval is None or not trial_ids:
        return set()
    session = storage.scoped_session()
    try:
        seen = {row[0] for row in session.query(TrialHeartbeatModel.trial_id)
                .filter(TrialHeartbeatModel.trial_id.in_(list(trial_ids)))}
    finally:
        session.close()
    return set(trial_ids) - seen


def _fail_unclaimed_trials(study: Any, config: SearchConfig) -> None:
    """Fail, and retry like a stale one, every RUNNING trial that started more than ``grace_period``
    seconds ago and that no objective has claimed, or that has never had a heartbeat.

    Optuna fails a dead worker's trial once its heartbeat is older than the grace period, but a worker
    killed before its trial's first heartbeat leaves a RUNNING trial with none at all, which Optuna
    never fails (its stale check skips trials without one): every worker would then wait for it at the
    stage barrier for ever. Optuna's heartbeat thread writes the first one as the trial starts, in
    parallel with lightkit's objective, which claims the trial first thing: a trial that old with no
    claim, or with a claim but no heartbeat (a kill between the two writes), has no worker.
    """

    import optuna

    # Optuna >= 5 stores datetime_start in UTC and hands it back in this machine's local time; older
    # Optuna stamps the writer's local time (workers sharing a server should then share a time zone).
    now = datetime.datetime.now()
    grace = datetime.timedelta(seconds=config.grace_period)
    old = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
           if t.datetime_start is not None and now - t.datetime_start > grace]
    claimed_ids = {t._trial_id for t in old if t.user_attrs.get(CLAIM_ATTR, "").rpartition("#")[2] == str(t.number)}
    silent = _without_heartbeat(study, sorted(claimed_ids))
    dead = [t for t in old if t._trial_id not in claimed_ids or t._trial_id in silent]
    if not dead:
        return
    _, retry = _retry_callback(config)
    for trial in dead:
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        log.warning(f"search: trial {trial.number} of {study.study_name} was started "
                    f"{(now - trial.datetime_start).seconds} s "
                    "ago by a worker that died before its first heartbeat; failed and queued again with its "
                    "parameters.")
        retry(study, study.get_trials(deepcopy=True)[trial.number])

