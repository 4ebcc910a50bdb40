"""An ``http://`` MLflow tracking server works like the embedded store (real server, loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from searchsvc.loader import load_study
from searchsvc.runner import run_study
from tests.conftest import base_study

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not become healthy within 90 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_study_tracks_every_trial_on_an_http_server(mlflow_server, write_study, tmp_path):
    study = base_study(
        name="over-http", budget={"n_trials": 4, "max_epochs": 2}, workdir=str(tmp_path / "w")
    )
    study["ensemble"] = {"enabled": False}
    path = write_study(study)
    result = run_study(load_study(path), tracking_uri=mlflow_server, console=Console(quiet=True))
    assert result.finished == 4
    assert not (tmp_path / "w" / "mlflow.db").exists(), "nothing went to the embedded store"
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("over-http")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    assert len(runs) == 4
    for run in runs:
        assert run.data.tags["searchsvc.state"] in {"COMPLETE", "PRUNED"}
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    artifacts = [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert "study.yaml" in artifacts
    copy = client.download_artifacts(result.parent_run_id, "study.yaml", str(tmp_path / "dl"))
    assert yaml.safe_load(Path(copy).read_text())["name"] == "over-http"
