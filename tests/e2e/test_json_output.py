"""``--json`` on ``run`` and ``ensemble``: stdout is one JSON document and nothing else, equal
to what the stores say (Optuna's counts and trials, MLflow's parent run and the
``ensemble/summary.json`` logged to it). One small study with an ensemble, run once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from searchsvc.study.loader import load_study
from searchsvc.study_run import StudyRun
from tests.helpers import TESTS, base_study, clean_env, searchsvc_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STUDY = {
    "name": "json-out",
    "trainer": "mlp",
    "dataset": "synthetic",
    "objective": {"metric": "val_loss", "mode": "min"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "n_layers": 1,
        "width_1": {"type": "int", "low": 8, "high": 32},
        "batch_size": 64,
    },
    "sampler": {"name": "random"},
    "scheduler": {"name": "none"},
    "budget": {"n_trials": 3, "max_epochs": 2},
    "ensemble": {"method": "greedy", "size": 3, "candidates": 3},
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The study file and the finished ``searchsvc run --json`` of it."""
    folder = tmp_path_factory.mktemp("json")
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "workdir": str(folder / "runs")}, sort_keys=False))
    done = searchsvc_cli(folder, "run", str(path), "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return path, done


def _summary_artifact(run: StudyRun, parent_run_id: str) -> dict[str, Any]:
    client = MlflowClient(tracking_uri=run.paths.tracking_uri)
    folder = client.download_artifacts(parent_run_id, "ensemble/summary.json")
    return json.loads(Path(folder).read_text())


def test_run_json_is_one_document_matching_the_stores(ran) -> None:
    path, done = ran
    document = json.loads(done.stdout)  # the whole of stdout: nothing else may be there
    run = StudyRun.prepare(load_study(path))
    study = optuna.load_study(study_name="json-out", storage=run.paths.storage_url)
    states = Counter(t.state.name for t in study.trials)

    assert (document["complete"], document["pruned"], document["failed"]) == (
        states["COMPLETE"], states["PRUNED"], states["FAIL"],
    )  # fmt: skip
    assert document["finished"] == len(study.trials) == document["budget"] == 3
    best = min((t for t in study.trials if t.values), key=lambda t: t.values[0])
    assert (document["top"][0]["number"], document["top"][0]["values"]) == (
        best.number, best.values,
    )  # fmt: skip
    assert document["top"][0]["params"] == best.params
    client = MlflowClient(tracking_uri=run.paths.tracking_uri)
    parent = client.get_run(document["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert document["paths"]["storage_url"] == run.paths.storage_url
    assert (document["interrupted"], document["stopped_during"]) == (False, "")
    assert Path(document["report"]).is_file()


def test_run_json_ensemble_is_the_summary_logged_to_the_parent_run(ran) -> None:
    path, done = ran
    document = json.loads(done.stdout)
    run = StudyRun.prepare(load_study(path))

    logged = _summary_artifact(run, document["parent_run_id"])

    assert document["ensemble"] == logged
    assert logged["members"] and logged["ensemble"]["accuracy"] > 0


def test_run_json_progress_goes_to_stderr(ran) -> None:
    _, done = ran

    assert "json-out trials 3/3" in done.stderr  # the progress line, not on stdout
    assert "json-out trials" not in done.stdout


def test_ensemble_json_is_the_rebuilt_summary(ran) -> None:
    path, done = ran
    parent_run_id = json.loads(done.stdout)["parent_run_id"]

    arguments = ("ensemble", str(path), "--method", "top_k", "--size", "2", "--json")
    rebuilt = searchsvc_cli(path.parent, *arguments, timeout=600)

    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    document = json.loads(rebuilt.stdout)
    assert document == _summary_artifact(StudyRun.prepare(load_study(path)), parent_run_id)
    assert (document["method"], len(document["members"])) == ("top_k", 2)


def test_run_json_interrupted_prints_the_document_then_the_line_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(base_study(name="json-stop")))
    marker = tmp_path / "in-stage"
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "stage_hook.py"), "block",
         "searchsvc.report.build:write_report", str(marker), "run", "study.yaml", "--json"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 130, stderr[-3000:]
    document = json.loads(stdout)
    assert (document["interrupted"], document["stopped_during"], document["signal"]) == (
        True, "writing the report", "SIGTERM",
    )  # fmt: skip
    assert (document["finished"], document["report"]) == (4, None)
    assert stderr.splitlines()[-1] == (
        "interrupted by SIGTERM while writing the report; finished trials are kept. "
        "Resume with: searchsvc run study.yaml"
    )
