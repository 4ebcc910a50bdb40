"""MLflow writes that survive an outage: done now, or queued in order until the server answers.

Only the tracker (``searchsvc.tracking``) uses this. A write MLflow cannot take because it is
unreachable (or answers with a server error) is queued, with later writes behind it, and
retried every few seconds; a write MLflow refuses (a client error) is logged and counted,
never retried, so one bad write cannot end a study of many trials.
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

from searchsvc.errors import TrackingError

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
    """The queue of one tracker's writes: in order, in memory, files copied to a spool folder.

    Attributes:
        lost_writes: writes MLflow refused (not an outage): logged, never retried.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._pending: deque[tuple[Callable[[], None], str]] = deque()
        self._next_try = 0.0
        self._spool: Path | None = None
        self.lost_writes = 0

    def write(self, op: Callable[[], None], what: str) -> None:
        """Do ``op`` now, or queue it behind earlier deferred writes if MLflow is unreachable."""
        if self._pending:
            self._pending.append((op, what))
            self._flush_once()
            return
        outage = self._attempt(op, what)
        if outage is None:
            return
        self._pending.append((op, what))
        self._next_try = time.monotonic() + _RETRY_EVERY_S
        logger.warning(
            "MLflow at %s unreachable (%s); deferring %s and later writes until it answers",
            self.tracking_uri, type(outage).__name__, what,
        )  # fmt: skip

    def _attempt(self, op: Callable[[], None], what: str) -> Exception | None:
        """Do ``op``; the error when MLflow is unreachable (the caller keeps the write), else
        None. A write MLflow refuses must not end a study of many trials: it is logged,
        counted in ``lost_writes`` and dropped."""
        try:
            op()
        except Exception as exc:
            if unreachable(exc):
                return exc
            self.lost_writes += 1
            logger.error("MLflow refused %s; it is not recorded: %s", what, exc)
        return None

    def _flush_once(self) -> bool:
        """Write queued updates in order; returns True when nothing is left."""
        if not self._pending:
            return True
        if time.monotonic() < self._next_try:
            return False
        written = 0
        while self._pending:
            op, what = self._pending[0]
            if self._attempt(op, what) is not None:
                self._next_try = time.monotonic() + _RETRY_EVERY_S
                if written:
                    logger.warning("MLflow: wrote %d deferred updates, %d still waiting",
                                   written, len(self._pending))  # fmt: skip
                return False
            self._pending.popleft()
            written += 1
        logger.warning("MLflow at %s answers again: wrote %d deferred updates",
                       self.tracking_uri, written)  # fmt: skip
        return True

    def flush(self, wait_s: float = 300.0) -> None:
        """Wait (bounded) until every deferred write is in MLflow.

        Raises:
            TrackingError: the server stayed unreachable for ``wait_s`` seconds.
        """
        deadline = time.monotonic() + wait_s
        while not self._flush_once():
            if time.monotonic() > deadline:
                raise TrackingError(
                    f"MLflow at {self.tracking_uri} stayed unreachable for {wait_s:.0f} s; "
                    f"{len(self._pending)} updates were not written"
                )
            time.sleep(max(0.0, self._next_try - time.monotonic()))
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    def flush_now(self) -> bool:
        """One attempt to write what is deferred, now; True when nothing is left."""
        self._next_try = 0.0
        return self._flush_once()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _spooled(self, folder: Path) -> Path:
        """A private copy of ``folder`` that outlives the caller's temporary files."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="searchsvc-mlflow-spool-"))
        target = Path(tempfile.mkdtemp(dir=self._spool))
        shutil.copytree(folder, target, dirs_exist_ok=True)
        return target

    def write_files(self, write: Callable[..., None], folder: Path, what: str) -> None:
        if not self._pending:
            try:
                write()
                return
            except Exception as exc:
                if not unreachable(exc):
                    raise
        # The caller's folder may vanish (temporary dirs, Ray replacing checkpoints): copy it.
        copy = self._spooled(folder)
        self.write(lambda: write(copy), f"{what} files")
