"""A study's embedded stores run in WAL mode with synchronous=NORMAL; other SQLite files in
the same process are left as they are."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import sqlalchemy

from searchsvc.search.storage import _rdb_storage
from searchsvc.tracking import StudyTracker

NORMAL, FULL = 1, 2


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_the_optuna_store_is_wal_with_normal_sync(tmp_path):
    storage = _rdb_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    optuna.create_study(storage=storage, study_name="s").ask().set_user_attr("k", 1)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == NORMAL
    assert _journal_mode(tmp_path / "optuna.db") == "wal"


def test_the_mlflow_store_is_wal_with_normal_sync(tmp_path):
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.client.create_experiment("e")
    assert _journal_mode(tmp_path / "mlflow.db") == "wal"
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with engine.connect() as conn:  # any new connection to a study's file is tuned
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == NORMAL


def test_another_sqlite_file_in_the_process_is_left_alone(tmp_path):
    _rdb_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'mine.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
        conn.commit()
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    assert _journal_mode(tmp_path / "mine.db") == "delete"
