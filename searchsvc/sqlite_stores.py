"""The embedded SQLite stores (Optuna's ``optuna.db``, MLflow's ``mlflow.db``) in WAL mode with
``synchronous=NORMAL``.

Why: the driver commits about 40 times per trial (each epoch's value, the checkpoint, the
trial's attributes and end in Optuna; its run, metrics, tags and end in MLflow). In SQLite's
default rollback-journal mode with ``synchronous=FULL`` every commit waits for several
fsyncs: 2-7 ms each here, a third of the driver's time in a long study of short trials. In
WAL mode with ``synchronous=NORMAL`` a commit appends to the write-ahead log without an
fsync (0.9 ms). Durability: a commit survives the driver being killed (it is in the log,
which the OS keeps); only a power cut or an OS crash can lose the last commits, never corrupt
the file. WAL also lets readers (``searchsvc status``, the MLflow UI) read while the driver
writes.

Only the files a study registers are tuned (the listener checks each new connection's file),
so a Python caller's own SQLite databases in the same process are left as they are.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Any

__all__ = ["tune_sqlite_store"]

logger = logging.getLogger(__name__)

_SQLITE = "sqlite:///"
_WAL_WAIT_S = 10.0
_files: set[str] = set()
_lock = threading.Lock()
_installed = False


def tune_sqlite_store(url: str) -> None:
    """Have every connection SQLAlchemy opens to ``url``'s file use WAL + synchronous=NORMAL
    (a URL that is not a SQLite file is left alone). Call before the store is first opened."""
    global _installed
    if not url.startswith(_SQLITE):
        return
    path = url.removeprefix(_SQLITE).split("?", 1)[0]
    with _lock:
        _files.add(os.path.realpath(path))
        if not _installed:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.listen(Engine, "connect", _on_connect)
            _installed = True


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    row = dbapi_connection.execute("PRAGMA database_list").fetchone()
    if row is None or not row[2] or os.path.realpath(row[2]) not in _files:
        return
    _set_wal(dbapi_connection)
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # per connection


def _set_wal(connection: sqlite3.Connection) -> None:
    """WAL mode, kept in the file once set. Switching needs the file to itself: while another
    process creates the schema of a new store it is busy, so try again for a while, then
    leave the mode as it is (a slower store, never a failed connection)."""
    deadline = time.monotonic() + _WAL_WAIT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:  # "database is locked"
            if time.monotonic() >= deadline:
                logger.debug("SQLite store left in its journal mode: %s", exc)
                return
            time.sleep(0.05)
