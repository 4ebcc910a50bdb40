"""No secret printed, logged or stored: a literal password in each place a URL can come from
(the study file, an option, the environment; the Optuna storage and the MLflow tracking URI
alike) appears nowhere in stdout, stderr, the study's folder (the log, the report, MLflow's
artifacts) or the two databases (MLflow's params, tags and artifacts' records; Optuna's
attributes). A real PostgreSQL holds both stores (trust authentication: any password is
accepted, so the run succeeds with a secret in every URL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import base_study
from tests.servers import _pg_bin, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SECRETS = {
    "storage in the file": "Pw-StorageFile-1a",
    "tracking in the file": "Pw-TrackingFile-2b",
    "storage option": "Pw-StorageOpt-3c",
    "tracking option": "Pw-TrackingOpt-4d",
    "storage variable": "Pw-StorageEnv-5e",
    "tracking variable": "Pw-TrackingEnv-6f",
    "bad storage option": "Pw-BadStorage-7g",
}


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as base:
        yield base


def _url(base: str, password: str, database: str) -> str:
    host = base.split("@", 1)[1]
    return f"postgresql+psycopg2://postgres:{password}@{host}/{database}"


def _cli(folder: Path, *args: str, env: dict[str, str] | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}
    return subprocess.run(
        [sys.executable, "-m", "searchsvc", *args], cwd=folder, capture_output=True, text=True,
        timeout=300, env={**clean, "PYTHONWARNINGS": "ignore", **(env or {})},
    )  # fmt: skip


def _study(folder: Path, name: str, **urls: str) -> Path:
    study = base_study(name=name, budget={"n_trials": 2, "max_epochs": 1}, **urls)
    study["ensemble"] = {"enabled": False}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _dump(base: str, database: str) -> str:
    host, port = base.split("@", 1)[1].split(":")
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", _pg_bin("pg_dump"), "-h", host, "-p", port,
         "-U", "postgres", database],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def test_a_password_in_any_url_is_shown_and_stored_nowhere(postgres, tmp_path):
    s = SECRETS
    runs = [
        _cli(tmp_path, "run", _study(
            tmp_path, "from-files", storage=_url(postgres, s["storage in the file"], "optuna"),
            tracking_uri=_url(postgres, s["tracking in the file"], "mlflow")).name),
        _cli(tmp_path, "run", _study(tmp_path, "from-options").name,
             "--storage", _url(postgres, s["storage option"], "optuna"),
             "--tracking-uri", _url(postgres, s["tracking option"], "mlflow")),
        _cli(tmp_path, "run", _study(tmp_path, "from-variables").name, env={
            "SEARCHSVC_STORAGE": _url(postgres, s["storage variable"], "optuna"),
            "MLFLOW_TRACKING_URI": _url(postgres, s["tracking variable"], "mlflow")}),
    ]  # fmt: skip
    for done in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    bad = _url(postgres, s["bad storage option"], "optuna").rsplit(":", 1)[0] + ":9/db"
    status = _cli(tmp_path, "status", "from-files.yaml", "--storage", bad)
    failed = _cli(tmp_path, "run", "from-files.yaml", "--storage", bad)
    assert (status.returncode, failed.returncode) == (1, 1)
    assert failed.stderr.splitlines()[-1] == (
        "finished trials are kept; resume with: searchsvc run from-files.yaml --storage "
        '"$SEARCHSVC_STORAGE" (with SEARCHSVC_STORAGE set to the --storage URL you gave: its '
        "password is not shown)"
    )

    shown = "".join(d.stdout + d.stderr for d in (*runs, status, failed))
    stored = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    databases = _dump(postgres, "optuna") + _dump(postgres, "mlflow")
    assert "from-options" in databases and "postgres:***@" in databases, "the stores were read"
    for place, secret in SECRETS.items():
        assert secret not in shown, f"{place}: shown on the terminal"
        assert secret not in databases, f"{place}: stored in a database"
        leaks = [str(p) for p, data in stored.items() if secret.encode() in data
                 and not (p.parent == tmp_path and p.suffix == ".yaml")]  # fmt: skip
        assert leaks == [], f"{place}: written to {leaks}"
