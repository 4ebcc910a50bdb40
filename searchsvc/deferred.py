"""MLflow writes that survive an outage and a driver crash: done now, or queued in order (and
journaled on disk) until the server answers.

Only the tracker (``searchsvc.tracking``) uses this: it is the one path of every MLflow write.
A write MLflow cannot take because it is unreachable (or answers with a server error) is
queued, with later writes behind it, journaled (``searchsvc.journal``) and retried every few
seconds; a write MLflow refuses (a client error, a read-only or full artifact store) is logged
and counted, never retried, so one bad write cannot end a study of many trials.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from searchsvc.errors import first_line
from searchsvc.journal import Journal

__all__ = ["DeferredWrites", "unreachable"]

logger = logging.getLogger(__name__)

_RETRY_EVERY_S = 2.0


def unreachable(exc: BaseException) -> bool:
    """True when MLflow could not be reached or answered with a server error (5xx): down,
    restarting, or its own database away. A client error (4xx) is a bad request, not an outage.
    """
    import requests
    from mlflow.exceptions import RestException

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, RestException) and exc.get_http_status_code() >= 500:
        return True
    text = str(exc)
    if re.search(r"failed with error code 5\d\d\b", text):
        return True
    return any(
        marker in text
        for marker in ("Connection refused", "Max retries exceeded", "failed with exception",
                       "RemoteDisconnected", "Connection aborted")
    )  # fmt: skip


class DeferredWrites:
    """The queue of one tracker's writes: in order, each a JSON-serialisable record that
    ``apply`` makes; journaled on disk (see ``searchsvc.journal``) while MLflow is away.

    Attributes:
        lost_writes: writes MLflow refused (not an outage): logged, never retried.
    """

    def __init__(self, tracking_uri: str, apply: Callable[[dict[str, Any]], None]) -> None:
        self.tracking_uri = tracking_uri
        self._apply = apply
        self._pending: deque[tuple[dict[str, Any], str]] = deque()
        self._next_try = 0.0
        self.journal: Journal | None = None
        self._spool: Path | None = None
        self.lost_writes = 0

    def use_journal(self, journal: Journal) -> int:
        """Journal deferred writes in ``journal``; queues what it holds from an earlier driver
        (written first, in order). Returns how many were waiting there."""
        self.journal = journal
        waiting = journal.pending()
        for record in waiting:  # "replayed": a run it creates may exist already (see ops)
            self._pending.append(({**record, "replayed": True}, record.get("what", record["op"])))
        return len(waiting)

    def write(self, record: dict[str, Any], what: str) -> str:
        """Make ``record`` now, or queue (and journal) it behind earlier deferred writes if
        MLflow is unreachable. Returns ``"written"``, ``"deferred"`` or ``"refused"``."""
        if self._pending:
            self._defer(record, what)
            self._flush_once()
            return "deferred"
        refused = self.lost_writes
        outage = self._attempt(record, what)
        if outage is None:
            return "refused" if self.lost_writes > refused else "written"
        self._defer(record, what)
        self._next_try = time.monotonic() + _RETRY_EVERY_S
        where = f"; journaled in {self.journal.path}" if self.journal is not None else ""
        logger.warning(
            "MLflow at %s unreachable (%s); deferring %s and later writes until it answers%s",
            self.tracking_uri, type(outage).__name__, what, where,
        )  # fmt: skip
        return "deferred"

    def _defer(self, record: dict[str, Any], what: str) -> None:
        if "folder" in record:  # the caller's files are temporary: keep a copy
            record = {**record, "folder": self._keep(Path(record["folder"]))}
        if self.journal is not None:
            record = self.journal.append({**record, "what": what})
        self._pending.append((record, what))

    def _keep(self, folder: Path) -> str:
        if self.journal is not None:
            return self.journal.keep_files(folder)
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="searchsvc-mlflow-spool-"))
        target = Path(tempfile.mkdtemp(dir=self._spool))
        shutil.copytree(folder, target, dirs_exist_ok=True)
        return str(target)

    def _attempt(self, record: dict[str, Any], what: str) -> Exception | None:
        """Make ``record``; the error when MLflow is unreachable (the caller keeps the write),
        else None. A write MLflow refuses (a 4xx, a read-only or full artifact store) must not
        end a study of many trials: it is logged, counted in ``lost_writes`` and dropped."""
        try:
            self._apply(record)
        except Exception as exc:
            if unreachable(exc):
                return exc
            self.lost_writes += 1
            logger.error("MLflow refused %s; it is not recorded: %s", what, first_line(exc))
        return None

    def _flush_once(self) -> bool:
        """Write queued updates in order; returns True when nothing is left."""
        if not self._pending:
            return True
        if time.monotonic() < self._next_try:
            return False
        written = 0
        while self._pending:
            record, what = self._pending[0]
            if self._attempt(record, what) is not None:
                self._next_try = time.monotonic() + _RETRY_EVERY_S
                if written:
                    logger.warning("MLflow: wrote %d deferred updates, %d still waiting",
                                   written, len(self._pending))  # fmt: skip
                return False
            self._pending.popleft()
            if self.journal is not None and "seq" in record:
                self.journal.done(record["seq"])
            written += 1
        logger.warning("MLflow at %s answers again: wrote %d deferred updates",
                       self.tracking_uri, written)  # fmt: skip
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None
        return True

    def flush(self, wait_s: float = 300.0) -> bool:
        """Wait (bounded) until every deferred write is in MLflow; False if ``wait_s``
        passed first (the writes stay queued, and journaled when there is a journal)."""
        deadline = time.monotonic() + wait_s
        while not self._flush_once():
            if time.monotonic() > deadline:
                return False
            time.sleep(max(0.0, min(self._next_try, deadline) - time.monotonic()) + 0.01)
        return True

    def flush_now(self) -> bool:
        """One attempt to write what is deferred, now; True when nothing is left."""
        self._next_try = 0.0
        return self._flush_once()

    @property
    def pending(self) -> int:
        return len(self._pending)
