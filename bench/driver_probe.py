"""Counts of the driver's store round trips, per finished trial, for ``bench/driver_scale.py``
and the suite's scale test (``tests/e2e/test_driver_scale.py``).

It runs inside the driver's process (the study is run with ``searchsvc.api.run``) and counts:

- SQL statements and transactions on each SQLAlchemy engine, keyed by its database (Optuna's
  store, MLflow's embedded store): each statement is a round trip to a database server;
- HTTP requests to an MLflow tracking server (MLflow's ``http_request``, one per request) and
  the milliseconds the driver waits for their answers;
- calls of ``MlflowClient``'s public methods: the tracking API calls the driver makes.

After every ``Study.tell`` it takes a snapshot, so the counts can be cut per window of
finished trials (``Snapshot`` list in tell order). Nothing in ``searchsvc`` knows of it.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Probe", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """The counts just after one trial's tell."""

    wall: float  # time.time()
    cpu: float  # time.process_time() of the driver's process
    counts: dict[str, int]


@dataclass
class Probe:
    """Installs the counters once per process; read :attr:`counts` and :attr:`snapshots`."""

    counts: Counter = field(default_factory=Counter)
    snapshots: list[Snapshot] = field(default_factory=list)

    def install(self) -> Probe:
        self._count_sql()
        self._count_http()
        self._count_client_calls()
        self._snapshot_on_tell()
        return self

    def per_trial(self, first: int, last: int) -> dict[str, float]:
        """Mean counts per trial between the tells ``first`` and ``last`` (indices)."""
        a, b = self.snapshots[first], self.snapshots[last]
        n = last - first
        keys = set(a.counts) | set(b.counts)
        return {k: (b.counts.get(k, 0) - a.counts.get(k, 0)) / n for k in sorted(keys)}

    # --------------------------------------------------------------------------- counters

    def _count_sql(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def store(conn: Any) -> str:
            name = str(conn.engine.url.database or conn.engine.url)
            return "mlflow" if "mlflow" in name else "optuna"

        def on_statement(conn: Any, *_args: Any) -> None:
            self.counts[f"{store(conn)}_sql_statements"] += 1

        def on_commit(conn: Any) -> None:
            self.counts[f"{store(conn)}_sql_transactions"] += 1

        event.listen(Engine, "after_cursor_execute", on_statement)
        event.listen(Engine, "commit", on_commit)

    def _count_http(self) -> None:
        from mlflow.utils import rest_utils

        original = rest_utils.http_request

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts["mlflow_http_requests"] += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:  # the driver waits this long for the server: in whole milliseconds
                self.counts["mlflow_http_wait_ms"] += round(1000 * (time.perf_counter() - started))

        rest_utils.http_request = counted

    def _count_client_calls(self) -> None:
        from mlflow.tracking import MlflowClient

        for name, method in inspect.getmembers(MlflowClient, inspect.isfunction):
            if not name.startswith("_"):
                setattr(MlflowClient, name, self._counting(method, "mlflow_client_calls"))

    def _counting(self, method: Any, key: str) -> Any:
        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[key] += 1
            return method(*args, **kwargs)

        return counted

    def _snapshot_on_tell(self) -> None:
        import optuna

        original = optuna.Study.tell

        @functools.wraps(original)
        def tell(study: Any, *args: Any, **kwargs: Any) -> Any:
            frozen = original(study, *args, **kwargs)
            self.snapshots.append(Snapshot(time.time(), time.process_time(), dict(self.counts)))
            return frozen

        optuna.Study.tell = tell
