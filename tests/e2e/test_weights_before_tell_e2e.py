"""A driver killed right after Optuna is told COMPLETE leaves no COMPLETE trial without weights.

Real Ray, Optuna storage and MLflow, through the CLI. The driver SIGKILLs itself right after
the first COMPLETE tell (the searcher's test hook ``SEARCHSVC_TEST_DIE_AFTER_TELL``), the
moment that used to fall between the tell and the upload of the trial's weights; the same
command run again finishes the study. Every COMPLETE trial then says its weights are stored,
and its MLflow run holds them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from searchsvc import keys
from tests.helpers import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAME = "weights-first"


def _study(workdir: Path) -> dict:
    return {
        "name": NAME,
        "trainer": "mlp",
        "dataset": "digits",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "n_layers": 1,
            "width_1": 16,
            "batch_size": 64,
        },
        "sampler": "random",
        "scheduler": "none",
        "budget": {"n_trials": 2, "max_epochs": 2, "max_concurrent_trials": 1},
        "ensemble": {"enabled": False},
        "seed": 3,
        "workdir": str(workdir),
    }


def _run(path: Path, **extra: str) -> subprocess.Popen[str]:
    # A session of its own, so the Ray processes it starts can be killed with it.
    return subprocess.Popen(
        [sys.executable, "-m", "searchsvc", "run", str(path)], cwd=path.parent,
        env={**clean_env(), "PYTHONWARNINGS": "ignore", **extra}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _model_files(client: MlflowClient) -> dict[int, list[str]]:
    """Trial number -> the files under ``model/`` of its MLflow run."""
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{keys.TAG_TRIAL}` != ''"
    )
    return {
        int(run.data.tags[keys.TAG_TRIAL]): sorted(
            f.path for f in client.list_artifacts(run.info.run_id, "model")
        )
        for run in runs
    }


def test_a_driver_killed_right_after_the_complete_tell_leaves_the_weights_stored(
    write_study, tmp_path
):
    path = write_study(_study(tmp_path / "w"))
    killed = _run(path, SEARCHSVC_TEST_DIE_AFTER_TELL="1")
    try:
        log, _ = killed.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the Ray processes it left
            os.killpg(killed.pid, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, log[-3000:]
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    first = optuna.load_study(study_name=NAME, storage=storage).get_trials()
    assert [t.state for t in first] == [optuna.trial.TrialState.COMPLETE], "killed after it"

    again = _run(path)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log[-3000:]

    trials = optuna.load_study(study_name=NAME, storage=storage).get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in complete] == [0, 1]
    files = _model_files(MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}"))
    found = {t.number: (t.user_attrs.get(keys.WEIGHTS), files.get(t.number)) for t in complete}
    stored = ("stored", ["model/params.json", "model/state_dict.pt"])
    assert found == {0: stored, 1: stored}
    # The run the killed driver left RUNNING was ended INTERRUPTED by the rerun's stale-run
    # clean-up, then mended by the reconciliation: Optuna says COMPLETE, so does MLflow.
    client = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], f"tags.`{keys.TAG_TRIAL}` = '0'")
    assert [(r.data.tags[keys.TAG_STATE], r.info.status) for r in runs] == [
        ("COMPLETE", "FINISHED")
    ]
