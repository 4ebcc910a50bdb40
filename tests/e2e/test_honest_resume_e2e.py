"""Resumes that are honest about what they continue, with real Ray, Optuna storage and MLflow.

The driver is killed with SIGKILL mid-study and run again, as a user would. A successor that
cannot continue its interrupted trial's checkpoint (its trainer does not resume) is a restart:
its own values, an MLflow run of its own, the old run marked superseded. A successor killed
before its own first checkpoint hands the original checkpoint on: the third driver's trial
continues from it. Each MLflow run holds each epoch once; the value Optuna keeps is the
validation score of the weights the trial stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from searchsvc import keys
from searchsvc.registry import resolve_trainer
from searchsvc.study.loader import load_study
from searchsvc.study_run import StudyRun
from tests.helpers import TESTS
from tests.helpers import env_with_test_trainers as _env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EPOCHS = 6
COMPLETE = optuna.trial.TrialState.COMPLETE


def _study(name: str, trainer: str, dataset: str, search_space: dict, workdir: Path) -> dict:
    return {
        "name": name,
        "trainer": trainer,
        "dataset": dataset,
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": search_space,
        "sampler": "random",
        "scheduler": "none",
        "budget": {"n_trials": 2, "max_epochs": EPOCHS, "max_concurrent_trials": 1},
        "ensemble": {"enabled": False},
        "seed": 3,
        "workdir": str(workdir),
    }


def _command(path: Path) -> list[str]:
    return [sys.executable, "-m", "searchsvc", "run", str(path)]


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials once the driver has created it (read-only until then: opening a
    storage that does not exist yet would create its schema beside the driver's)."""
    database = storage.removeprefix("sqlite:///")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            if not db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall():
                return []
    except sqlite3.Error:  # not created yet, or its schema half-written
        return []
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _run_until_killed(
    path: Path, env: dict[str, str], log: Path, ready: Callable[[], bool]
) -> None:
    """Start a driver, SIGKILL it (and the Ray processes it started) once ``ready()``."""
    with log.open("w") as sink:
        driver = subprocess.Popen(_command(path), cwd=path.parent, env=env,
                                  start_new_session=True, stdout=sink,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert driver.poll() is None, f"the driver ended first:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)


def _run_to_the_end(path: Path, env: dict[str, str]) -> None:
    done = subprocess.run(_command(path), cwd=path.parent, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _mid_trial(storage: str, name: str) -> Callable[[], bool]:
    """A trial is running with its own checkpoint after epoch 2 to 4 of 6."""

    def ready() -> bool:
        return any(
            t.state == optuna.trial.TrialState.RUNNING
            and 2 <= t.user_attrs.get(keys.CHECKPOINT, {}).get("epoch", 0) <= EPOCHS - 2
            for t in _trials(storage, name)
        )

    return ready


def _runs_by_trial(client: MlflowClient, name: str) -> dict[int, object]:
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{keys.TAG_TRIAL}` != ''"
    )
    by_trial: dict[int, object] = {}
    for run in runs:
        number = int(run.data.tags[keys.TAG_TRIAL])
        assert number not in by_trial, f"two MLflow runs claim trial {number}"
        by_trial[number] = run
    return by_trial


def _steps(client: MlflowClient, run) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]


def _stored_val_loss(client: MlflowClient, run, path: Path, tmp: Path) -> float:
    """The validation loss of the weights the trial stored, on the study's own split."""
    study_run = StudyRun.prepare(load_study(path))
    data = study_run.load_data()
    model = Path(client.download_artifacts(run.info.run_id, "model", str(tmp)))
    trainer = resolve_trainer(study_run.spec.trainer, (str(TESTS),))
    info = json.loads((model / "params.json").read_text())
    net = trainer.build_network(info["params"], data.n_features, data.n_classes)
    net.load_state_dict(torch.load(model / "state_dict.pt", weights_only=True))
    net.eval()
    with torch.no_grad():
        logits = net(torch.tensor(data.x_val))
        return F.cross_entropy(logits, torch.tensor(data.y_val)).item()


def test_a_successor_whose_trainer_cannot_resume_is_a_restart_in_a_run_of_its_own(
    write_study, tmp_path
):
    name = "restart"
    space = {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}}
    path = write_study(_study(name, "step_trainer:trainer", "synthetic", space, tmp_path / "w"))
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    log = tmp_path / "first.log"
    _run_until_killed(path, _env(STEP_EPOCH_S="0.7"), log, _mid_trial(storage, name))
    _run_to_the_end(path, _env())

    final = optuna.load_study(study_name=name, storage=storage)
    (old,) = [t for t in final.trials if t.user_attrs.get(keys.INTERRUPTED)]
    (successor,) = [t for t in final.trials if t.user_attrs.get(keys.RESUME_OF) == old.number]
    assert successor.state == COMPLETE
    assert successor.user_attrs[keys.RESTARTED] is True
    assert sorted(successor.intermediate_values) == list(range(1, EPOCHS + 1))
    client = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    runs = _runs_by_trial(client, name)
    new_run, old_run = runs[successor.number], runs[old.number]
    assert keys.TAG_RESUMED_FROM not in new_run.data.tags, "a run of its own"
    assert _steps(client, new_run) == list(range(1, EPOCHS + 1)), "each epoch once"
    assert old_run.data.tags[keys.TAG_SUPERSEDED_BY] == new_run.info.run_id
    assert old_run.info.status == "KILLED"
    assert len(_steps(client, old_run)) == len(set(_steps(client, old_run)))
    stored = _stored_val_loss(client, new_run, path, tmp_path / "model")
    assert successor.value == pytest.approx(stored, rel=1e-5)


def test_a_successor_killed_before_its_first_checkpoint_hands_the_checkpoint_on(
    write_study, tmp_path
):
    name = "double-kill"
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "width_1": {"type": "int", "low": 16, "high": 48},
        "n_layers": 1,
        "batch_size": 32,
    }
    path = write_study(_study(name, "fault_trainers:slow_mlp", "digits", space, tmp_path / "w"))
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    slow = _env(SLOW_EPOCH_S="1.0")
    _run_until_killed(path, slow, tmp_path / "first.log", _mid_trial(storage, name))
    (first,) = [t for t in _trials(storage, name) if t.state == optuna.trial.TrialState.RUNNING]
    checkpoint = first.user_attrs[keys.CHECKPOINT]

    def successor_asked() -> bool:
        return any(
            t.state == optuna.trial.TrialState.RUNNING and keys.RESUME_OF in t.user_attrs
            for t in _trials(storage, name)
        )

    _run_until_killed(path, slow, tmp_path / "second.log", successor_asked)
    (second,) = [t for t in _trials(storage, name) if t.user_attrs.get(keys.RESUME_OF) == 0]
    assert second.user_attrs[keys.CHECKPOINT]["path"] == checkpoint["path"], (
        "killed before its own first checkpoint"
    )
    _run_to_the_end(path, _env())

    final = optuna.load_study(study_name=name, storage=storage)
    (third,) = [t for t in final.trials if t.user_attrs.get(keys.RESUME_OF) == second.number]
    assert third.state == COMPLETE and keys.RESTARTED not in third.user_attrs
    assert sorted(third.intermediate_values) == list(range(1, EPOCHS + 1))
    done = checkpoint["epoch"]
    carried = {s: v for s, v in final.trials[first.number].intermediate_values.items()
               if s <= done}  # fmt: skip
    assert {s: third.intermediate_values[s] for s in carried} == carried
    client = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    runs = _runs_by_trial(client, name)
    run = runs[third.number]
    assert run.data.tags[keys.TAG_RESUMED_FROM] == str(second.number), "the run continued"
    assert _steps(client, run) == list(range(1, EPOCHS + 1)), "each epoch once"
    assert sorted(runs) == sorted(t.number for t in final.trials if t.state == COMPLETE)
    stored = _stored_val_loss(client, run, path, tmp_path / "model")
    assert third.value == pytest.approx(stored, rel=1e-5)
