"""The compose deployment's least privilege, tested for real where no Docker engine is needed:
the roles and grants of deploy/postgres-init.sh on a real PostgreSQL, MLflow's basic-auth
server (deploy/mlflow-auth.ini) refusing anonymous writes while a study given credentials
runs, and the submit entrypoint passing SIGTERM to the driver before stopping its Ray node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest
import yaml

from tests.helpers import REPO, base_study
from tests.servers import _pg_bin, free_port, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _connect(base: str, user: str, database: str):
    host, port = base.split("@", 1)[1].split(":")
    return psycopg2.connect(host=host, port=int(port), user=user, dbname=database)


def test_each_database_role_reaches_its_own_database_only():
    with postgres_server() as base:
        admin = _connect(base, "postgres", "postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:  # the throw-away server made both: start as compose does
            cursor.execute("DROP DATABASE mlflow")
            cursor.execute("DROP DATABASE optuna")
        admin.close()
        host, port = base.split("@", 1)[1].split(":")
        env = {**os.environ, "PATH": f"{Path(_pg_bin('psql')).parent}:{os.environ['PATH']}",
               "PGHOST": host, "PGPORT": port, "POSTGRES_USER": "postgres",
               "MLFLOW_DB_PASSWORD": "mlflow-pw", "OPTUNA_DB_PASSWORD": "optuna-pw"}  # fmt: skip
        subprocess.run(["sh", str(REPO / "deploy" / "postgres-init.sh")], env=env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        for role, own, other in (("mlflow", "mlflow", "optuna"), ("optuna", "optuna", "mlflow")):
            connection = _connect(base, role, own)
            with connection, connection.cursor() as cursor:
                cursor.execute("CREATE TABLE mine (x int)")  # it owns its database
            connection.close()
            with pytest.raises(psycopg2.OperationalError) as caught:
                _connect(base, role, other)
            assert f'permission denied for database "{other}"' in str(caught.value)


def _post(url: str, body: dict, headers: dict | None = None) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mlflow_refuses_anonymous_writes_and_a_study_with_credentials_runs(tmp_path):
    ini = (
        (REPO / "deploy" / "mlflow-auth.ini")
        .read_text()
        .replace("sqlite:////mlartifacts/basic_auth.db", f"sqlite:///{tmp_path / 'auth.db'}")
    )
    (tmp_path / "auth.ini").write_text(ini)
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-12345",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "k3y",
    }
    server = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # the compose health check reads /health without credentials
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "the server never became healthy"
                time.sleep(0.5)
        create = f"{url}/api/2.0/mlflow/experiments/create"
        assert _post(create, {"name": "anonymous"}) == 401

        study = base_study(name="with-credentials", budget={"n_trials": 2, "max_epochs": 1})
        study["ensemble"] = {"enabled": False}
        (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        done = subprocess.run(
            [sys.executable, "-m", "searchsvc", "run", "study.yaml", "--tracking-uri", url],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**clean, "MLFLOW_TRACKING_USERNAME": "admin",
                 "MLFLOW_TRACKING_PASSWORD": "admin-password-12345"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        search = f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=with-credentials"
        import base64

        token = base64.b64encode(b"admin:admin-password-12345").decode()
        with urllib.request.urlopen(
            urllib.request.Request(search, headers={"Authorization": f"Basic {token}"}), timeout=10
        ) as reply:
            assert json.load(reply)["experiment"]["name"] == "with-credentials"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_submit_entrypoint_passes_sigterm_to_the_driver_then_stops_the_node(tmp_path):
    calls = tmp_path / "ray-calls"
    stub = tmp_path / "bin" / "ray"  # stands in for the Ray CLI: records what it is asked
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "ray $*" >> {calls}\n')
    stub.chmod(0o755)
    driver = (
        "import pathlib, signal, sys, time\n"
        f"log = pathlib.Path({str(calls)!r})\n"
        "def stop(*_):\n"
        "    with log.open('a') as f: f.write('driver got SIGTERM\\n')\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "with log.open('a') as f: f.write('driver running\\n')\n"
        "time.sleep(60)\n"
    )
    entry = subprocess.Popen(
        ["sh", str(REPO / "deploy" / "submit-entrypoint.sh"), sys.executable, "-c", driver],
        env={**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while "driver running" not in (calls.read_text() if calls.exists() else ""):
        assert time.monotonic() < deadline and entry.poll() is None
        time.sleep(0.05)
    entry.send_signal(signal.SIGTERM)  # docker stop signals the entrypoint only
    assert entry.wait(timeout=30) == 130, "the driver's exit code is the container's"
    assert calls.read_text().splitlines() == [
        "ray start --address ray-head:6379 --num-cpus 0 --disable-usage-stats",
        "driver running",
        "driver got SIGTERM",
        "ray stop --force",
    ]
