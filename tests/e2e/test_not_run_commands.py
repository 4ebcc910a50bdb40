"""The commands that read a study's results, on a study that has not run: exit 1, one line,
and no file, database, study, experiment or run left behind.

No Ray: where the stores must exist (another study in them), they are written directly with
Optuna and MLflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import base_study

pytestmark = [pytest.mark.slow]

COMMANDS = {
    "status": ["status", "study.yaml"],
    "status --json": ["status", "study.yaml", "--json"],
    "trials": ["trials", "study.yaml"],
    "best": ["best", "study.yaml"],
    "ensemble": ["ensemble", "study.yaml"],
    "report": ["report", "study.yaml"],
    "predict": ["predict", "study.yaml", "inputs.npy"],
    "dashboard": ["dashboard", "study.yaml"],
}


def _listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size (a database written to would change)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _searchsvc(folder: Path, arguments: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}
    return subprocess.run(
        [sys.executable, "-m", "searchsvc", *arguments], cwd=folder, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _folder(tmp_path: Path, **study: object) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(base_study(name="never", **study)))
    np.save(folder / "inputs.npy", np.zeros((2, 20), dtype=np.float32))
    return folder


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_on_a_study_that_never_ran_exits_1_and_creates_nothing(
    tmp_path: Path, command: str
) -> None:
    folder = _folder(tmp_path)
    before = _listing(folder)

    done = _searchsvc(folder, COMMANDS[command])

    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: study.yaml: study 'never' has not run yet\n"
    assert _listing(folder) == before  # no runs/never/, no optuna.db, no mlflow.db


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_on_a_study_absent_from_shared_stores_changes_no_store(
    tmp_path: Path, command: str
) -> None:
    stores = tmp_path / "stores"
    stores.mkdir()
    storage, tracking = f"sqlite:///{stores / 'optuna.db'}", f"sqlite:///{stores / 'mlflow.db'}"
    optuna.create_study(study_name="other", storage=storage)
    client = MlflowClient(tracking_uri=tracking)
    client.create_run(client.create_experiment("other"))
    folder = _folder(tmp_path, storage=storage, tracking_uri=tracking)
    before = _listing(tmp_path)

    done = _searchsvc(folder, COMMANDS[command])

    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: study.yaml: study 'never' has not run yet\n"
    assert _listing(tmp_path) == before
    assert optuna.get_all_study_names(storage) == ["other"]
    experiments = client.search_experiments()
    assert sorted(e.name for e in experiments) == ["Default", "other"]
    ids = [e.experiment_id for e in experiments]
    assert len(client.search_runs(ids)) == 1
