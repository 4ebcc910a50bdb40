"""An ``http://`` MLflow tracking server works like the embedded store (real server, loopback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study
from tests.helpers import base_study
from tests.servers import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def mlflow_server(tmp_path):
    with MlflowServer(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts"
    ) as server:
        yield server.url


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


def test_ensemble_of_a_study_without_stored_weights_is_a_clear_error(write_study, tmp_path):
    """The noop trainer keeps no weights, so there is nothing to ensemble: say so."""
    study = base_study(name="no-weights", budget={"n_trials": 2, "max_epochs": 1},
                       workdir=str(tmp_path / "w"))  # fmt: skip
    path = write_study(study)
    result = run_study(load_study(path), console=Console(quiet=True))
    assert result.ensemble is None and result.complete >= 1
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "ensemble", str(path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    n = result.complete
    assert proc.stderr.splitlines()[-1] == (
        f"error: study 'no-weights': none of its {n} completed trials has a stored model that "
        f"loads ({n} skipped; see the warnings)"
    )
