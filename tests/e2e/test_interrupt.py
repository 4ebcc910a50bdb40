"""Ctrl-C stops a study cleanly: finished trials kept, none left RUNNING, resume completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tests.helpers import base_study

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _finished(storage: str) -> int:
    if not os.path.exists(storage.removeprefix("sqlite:///")):
        return 0
    try:
        study = optuna.load_study(study_name="interrupt-me", storage=storage)
    except Exception:  # not created yet, or the driver is still creating the tables
        return 0
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(states=done))


def test_ctrl_c_keeps_finished_trials_and_the_next_run_completes_the_budget(write_study, tmp_path):
    study = base_study(
        name="interrupt-me",
        trainer="mlp",
        dataset="digits",
        objective={"metric": "val_accuracy", "mode": "max"},
        search_space={
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "width_1": {"type": "int", "low": 16, "high": 32},
            "n_layers": 1,
            "batch_size": 32,
        },
        scheduler="none",
        budget={"n_trials": 6, "max_epochs": 8, "max_concurrent_trials": 2},
        workdir=str(tmp_path / "work"),
        ensemble={"enabled": False},
    )
    path = write_study(study)
    storage = f"sqlite:///{tmp_path / 'work' / 'optuna.db'}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    options = ["--n-trials", "6", "--storage", storage]
    command = [sys.executable, "-m", "searchsvc", "run", str(path), *options]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)  # fmt: skip
    deadline = time.monotonic() + 240
    while _finished(storage) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"Resume with: searchsvc run {path} --n-trials 6 --storage {storage}" in stdout
    assert "Traceback" not in stderr

    after_stop = optuna.load_study(study_name="interrupt-me", storage=storage)
    states = [t.state for t in after_stop.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    kept = _finished(storage)
    assert 1 <= kept < 6

    resumed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _finished(storage) == 6
    final = optuna.load_study(study_name="interrupt-me", storage=storage)
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in final.trials]
