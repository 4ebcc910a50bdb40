"""The persistent Optuna study: retry on a dropped connection, recovery of orphaned trials."""

from __future__ import annotations

import sqlite3
import threading

import optuna
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from searchsvc.search import storage
from searchsvc.search.storage import (
    count_trials,
    open_study,
    recover_interrupted,
    retrying,
)
from searchsvc.study.spec import StudySpec
from tests.helpers import base_study


def test_dropped_connection_is_retried_until_the_call_succeeds(monkeypatch):
    monkeypatch.setattr(storage, "_BACKOFF_S", (0.0, 0.0))
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "ok"

    assert retrying(flaky, "test") == "ok"
    assert len(calls) == 3


def test_a_session_whose_connection_dropped_mid_transaction_is_retried(monkeypatch):
    # What Optuna raises when _get_trials' fallback query runs on the invalidated session.
    monkeypatch.setattr(storage, "_BACKOFF_S", (0.0,))
    calls = []

    def pending_rollback() -> str:
        calls.append(1)
        if len(calls) == 1:
            try:
                raise PendingRollbackError(
                    "Can't reconnect until invalid transaction is rolled back"
                )
            except PendingRollbackError as exc:
                message = "An exception is raised during the commit."
                raise optuna.exceptions.StorageInternalError(message) from exc
        return "ok"

    assert retrying(pending_rollback, "test") == "ok"
    assert len(calls) == 2


def test_retries_give_up_after_the_backoff_schedule(monkeypatch):
    monkeypatch.setattr(storage, "_BACKOFF_S", (0.0, 0.0))

    def down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(OperationalError):
        retrying(down, "test")


def test_a_locked_database_behind_optunas_storage_is_retried_until_it_frees(
    tmp_path, monkeypatch, caplog
):
    # Optuna wraps SQLAlchemy's OperationalError in StorageInternalError: the real path.
    monkeypatch.setattr(storage, "_BACKOFF_S", (0.3, 0.3, 0.3, 0.3, 0.3))
    url = f"sqlite:///{tmp_path}/optuna.db"
    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 0.05}})
    study = optuna.create_study(storage=rdb, study_name="locked")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1, log=True)})
    locker = sqlite3.connect(tmp_path / "optuna.db", isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.5, lambda: locker.execute("COMMIT"))
    release.start()
    try:
        retrying(lambda: trial.report(0.5, step=1), "report")
    finally:
        release.join()
        locker.close()
    assert study.trials[0].intermediate_values == {1: 0.5}
    assert "Optuna storage: report failed (" in caplog.text and "locked" in caplog.text


def test_a_bad_statement_behind_optunas_storage_is_not_retried(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")
    calls = []

    def bad() -> None:
        calls.append(1)
        try:
            raise IntegrityError("INSERT", {}, Exception("duplicate key"))
        except IntegrityError as exc:
            raise optuna.exceptions.StorageInternalError("commit failed") from exc

    with pytest.raises(optuna.exceptions.StorageInternalError):
        retrying(bad, "test")
    assert len(calls) == 1 and study.trials == []


def test_a_real_database_error_is_not_retried():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        retrying(broken, "test")
    assert len(calls) == 1


def test_orphaned_running_trials_become_interrupted_and_are_asked_again(tmp_path):
    spec = StudySpec.model_validate(base_study())
    study = open_study(spec, f"sqlite:///{tmp_path}/optuna.db")
    done = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1, log=True)})
    study.tell(done, 0.5)
    orphan = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1, log=True)})
    assert recover_interrupted(study) == [orphan.number]
    counts = count_trials(study)
    assert (counts.complete, counts.interrupted, counts.running, counts.finished) == (1, 1, 0, 1)
    again = study.ask()
    assert again.params == {} and study.trials[-1].system_attrs.get("fixed_params") == {
        "lr": orphan.params["lr"]
    }


def _open_storage(url: str, barrier, results) -> None:
    from searchsvc.search.storage import _rdb_storage

    barrier.wait()
    try:
        _rdb_storage(url)
        results.put("ok")
    except Exception as exc:  # the race lost: say how
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")


@pytest.mark.slow
def test_two_processes_opening_a_new_storage_at_once_both_succeed(tmp_path):
    # A `searchsvc status` while the first run creates the database (the loser of that race
    # used to see "UNIQUE constraint failed: alembic_version" or "table ... already exists"
    # about one time in four).
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    outcomes = []
    for attempt in range(16):
        url = f"sqlite:///{tmp_path / f'optuna-{attempt}.db'}"
        barrier, results = context.Barrier(2), context.Queue()
        processes = [context.Process(target=_open_storage, args=(url, barrier, results))
                     for _ in range(2)]  # fmt: skip
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        outcomes += [results.get(timeout=10), results.get(timeout=10)]
    assert [o for o in outcomes if o != "ok"] == []
