"""Real servers for the cluster and fault tests: PostgreSQL and an MLflow tracking server on
loopback, started from the binaries on this machine and always stopped afterwards."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL with databases ``mlflow`` and ``optuna``; yields its base URL."""
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no 'postgres' user: install Debian's postgresql package")
    folder = Path(tempfile.mkdtemp(prefix="searchsvc-pg-"))
    os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    port = free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=120)  # fmt: skip

    as_postgres(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off"
    as_postgres(_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                "-w", "start")  # fmt: skip
    try:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
            cursor.execute("CREATE DATABASE optuna")
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(data),
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def drop_connections(
    base_url: str,
    database: str,
    *,
    refuse_for_s: float = 0.0,
    refuse_until: Callable[[], bool] | None = None,
) -> int:
    """Terminate every open connection to ``database`` (a dropped connection, as in a blip).

    With ``refuse_for_s``, new connections to it are refused for that long too (as while the
    server restarts), so the next storage calls fail instead of quietly reconnecting. With
    ``refuse_until`` as well, they are refused until it returns true, ``refuse_for_s`` being
    the longest: a fixed window can fall between two storage calls and prove nothing.
    """
    import psycopg2

    port = int(base_url.rsplit(":", 1)[1])
    connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        if refuse_for_s:
            cursor.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        (count,) = cursor.fetchone()
        if refuse_for_s:
            deadline = time.monotonic() + refuse_for_s
            done = refuse_until or (lambda: False)
            while not done() and time.monotonic() < deadline:
                time.sleep(0.2)
            cursor.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    connection.close()
    return int(count)


class MlflowServer:
    """``mlflow server`` on a loopback port that can be stopped and started again."""

    def __init__(self, backend_uri: str, artifacts: Path) -> None:
        self.backend_uri = backend_uri
        self.artifacts = artifacts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self._proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.backend_uri, "--workers", "1",
             "--artifacts-destination", str(self.artifacts)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("mlflow server did not become healthy within 120 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=30)
        self._proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
