"""optuna-dashboard on a study's Optuna storage (``searchsvc dashboard``).

The study is opened first as every read command opens it (:meth:`StudyTarget.open`), so a
study that has not run is a :class:`~searchsvc.errors.StudyNotRunError` and no database is
created; only then does optuna-dashboard connect. It serves the whole storage (other studies
in a shared one too); the URL points at this study's page. Its JSON API (``/api/studies``,
``/api/studies/<id>``) is what the browser page reads.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from searchsvc.errors import SearchsvcError
from searchsvc.inspect.target import StudyTarget

__all__ = ["Dashboard", "open_dashboard"]

DEFAULT_HOST = "127.0.0.1"  # loopback: the dashboard can change trials (notes, tell)
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Dashboard:
    """A dashboard ready to serve one study's storage.

    Attributes:
        name: the study's name; ``study_id``: its id in the storage (in the dashboard's URLs).
        storage_url: the Optuna storage served.
        host, port: where it listens.
    """

    name: str
    study_id: int
    storage_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @property
    def url(self) -> str:
        """The study's page."""
        return f"http://{self.host}:{self.port}/dashboard/studies/{self.study_id}"

    def serve(self) -> None:
        """Serve until Ctrl-C or SIGTERM (then return normally).

        Raises:
            SearchsvcError: the address cannot be listened on (port taken, unknown host).
        """
        from optuna_dashboard import run_server

        with _sigterm_as_ctrl_c():
            try:
                run_server(self.storage_url, host=self.host, port=self.port)
            except OSError as exc:
                raise SearchsvcError(
                    f"--port {self.port}: cannot listen on {self.host}:{self.port}: {exc}"
                ) from None


def open_dashboard(
    target: StudyTarget, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> Dashboard:
    """The dashboard of a study that has run (its storage opened read-only, nothing created).

    Raises:
        StudyNotRunError: the study has not run yet.
    """
    from optuna.storages import get_storage

    target.open()  # first: a study that has not run stops here, before any storage is made
    study_id = get_storage(target.storage_url).get_study_id_from_name(target.name)
    return Dashboard(target.name, study_id, target.storage_url, host, port)


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, ``docker stop``) stops the server as Ctrl-C does: the server's loop
    ends on ``KeyboardInterrupt`` and returns, instead of the process dying mid-request."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
