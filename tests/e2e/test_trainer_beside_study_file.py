"""A ``module:object`` trainer written beside the study file works with no PYTHONPATH set:
in ``validate`` and ``run``, in the driver and on every Ray worker, from the study's folder and
from any other working folder given a path to the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import TESTS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# The console script, as a user runs it: `python -m searchsvc` would put the current folder on
# sys.path by itself and hide a missing import path.
SEARCHSVC = str(Path(sys.executable).with_name("searchsvc"))


def _project(tmp_path: Path) -> Path:
    """A folder that holds only a study file and its trainer module."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(TESTS / "step_trainer.py", folder / "mycnn.py")
    study = {
        "name": "beside",
        "trainer": "mycnn:trainer",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {"lr": 0.1},
        "sampler": "random",
        "scheduler": "none",
        "budget": {"n_trials": 1, "max_epochs": 2},
        "ensemble": {"enabled": False},
    }
    (folder / "cnn.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return folder


def _searchsvc(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [SEARCHSVC, *arguments], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _complete_trials(workdir: Path) -> int:
    study = optuna.load_study(study_name="beside", storage=f"sqlite:///{workdir / 'optuna.db'}")
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def test_trainer_beside_the_study_file_runs_from_the_study_folder(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    checked = _searchsvc(folder, "validate", "cnn.yaml")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok cnn.yaml: study 'beside', trainer mycnn:trainer")

    done = _searchsvc(folder, "run", "cnn.yaml")

    assert done.returncode == 0, done.stderr[-3000:]
    assert _complete_trials(folder / "runs" / "beside") == 1


def test_trainer_beside_the_study_file_runs_from_another_working_folder(tmp_path: Path) -> None:
    folder = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    study_file = str(folder / "cnn.yaml")
    checked = _searchsvc(elsewhere, "validate", study_file)
    assert checked.returncode == 0, checked.stderr

    done = _searchsvc(elsewhere, "run", study_file)

    assert done.returncode == 0, done.stderr[-3000:]
    assert _complete_trials(elsewhere / "runs" / "beside") == 1
