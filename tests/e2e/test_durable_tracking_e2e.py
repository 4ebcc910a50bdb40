"""No MLflow write is lost to an outage plus a driver crash (real `mlflow server`, started and
stopped by the test; real Ray; the driver a real `searchsvc run` process)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from searchsvc.journal import Journal
from tests.helpers import base_study, env_with_test_trainers
from tests.servers import MlflowServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
EPOCHS = 5


def _study(tmp_path: Path, name: str, n_trials: int, ensemble: bool = False) -> Path:
    spec = base_study(
        name=name, trainer="fault_trainers:slow_mlp", dataset="digits",
        objective={"metric": "val_accuracy", "mode": "max"},
        search_space={"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                      "width_1": {"type": "int", "low": 16, "high": 32}, "n_layers": 1,
                      "batch_size": 64},
        scheduler="none",
        budget={"n_trials": n_trials, "max_epochs": EPOCHS, "max_concurrent_trials": 2},
        workdir=str(tmp_path / "w"),
    )  # fmt: skip
    spec["ensemble"] = {"enabled": ensemble, "size": 2, "candidates": 3}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _journaled(tmp_path: Path) -> int:
    journal = tmp_path / "w" / "mlflow-journal" / "journal.jsonl"
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if '"op"' in line)


def _wait_for(predicate, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def _every_epoch_once_on_the_server(url: str, tmp_path: Path, name: str) -> None:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'w' / 'optuna.db'}")
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`searchsvc.trial_number` != ''")
    by_number = {int(r.data.tags["searchsvc.trial_number"]): r for r in runs
                 if r.data.tags["searchsvc.state"] != "INTERRUPTED"}  # fmt: skip
    finished = [t for t in study.trials if t.state in FINISHED]
    assert sorted(by_number) == sorted(t.number for t in finished)
    for trial in finished:
        run = by_number[trial.number]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == sorted(trial.intermediate_values), trial.number  # each once
        assert run.data.tags["searchsvc.state"] == trial.state.name
        assert "searchsvc.reconcile" not in run.data.tags, run.data.tags["searchsvc.reconcile"]


def test_server_down_then_driver_killed_then_rerun_loses_no_epoch(tmp_path):
    env = env_with_test_trainers(SLOW_EPOCH_S="0.4", PYTHONWARNINGS="ignore")
    with MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as server:
        path = _study(tmp_path, "down-then-killed", n_trials=4)
        command = [sys.executable, "-m", "searchsvc", "run", str(path), "--tracking-uri",
                   server.url]  # fmt: skip
        log = (tmp_path / "first.log").open("w")
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            _wait_for(lambda: (tmp_path / "w" / "optuna.db").exists() and _epochs(tmp_path) >= 2)
            server.stop()
            _wait_for(lambda: _journaled(tmp_path) >= 4 or driver.poll() is not None)
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
            log.close()
        assert driver.returncode == -signal.SIGKILL
        server.start()
        again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        _every_epoch_once_on_the_server(server.url, tmp_path, "down-then-killed")
        assert "journaled update(s) of an earlier run" in again.stderr
        assert not (tmp_path / "w" / "mlflow-journal").exists()


def _epochs(tmp_path: Path) -> int:
    try:
        study = optuna.load_study(study_name="down-then-killed",
                                  storage=f"sqlite:///{tmp_path / 'w' / 'optuna.db'}")  # fmt: skip
    except Exception:  # not created yet
        return 0
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def test_server_down_past_the_final_wait_leaves_the_journal_and_sync_finishes(tmp_path):
    """The journal is left, the ensemble recorded as owed; `sync` writes the one and builds
    and registers the other."""
    env = env_with_test_trainers(SLOW_EPOCH_S="0.3", SEARCHSVC_MLFLOW_WAIT_S="2",
                                 PYTHONWARNINGS="ignore")  # fmt: skip
    with MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as server:
        path = _study(tmp_path, "past-the-wait", n_trials=3, ensemble=True)
        run = [sys.executable, "-m", "searchsvc", "run", str(path), "--tracking-uri", server.url]
        driver = subprocess.Popen(run, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
        _wait_for(lambda: (tmp_path / "w" / "optuna.db").exists() and _started(storage) >= 1)
        server.stop()
        stdout, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr[-3000:]
        said = [line for line in (stdout + stderr).splitlines() if "did not answer within" in line]
        journal = tmp_path / "w" / "mlflow-journal" / "journal.jsonl"
        expected = (
            f"MLflow at {server.url} did not answer within 2 s: (\\d+) update\\(s\\) kept in "
            f"{journal}; `searchsvc sync {path}` writes them when it answers \\(so does the next "
            "run\\)"
        )
        assert len(said) == 1 and re.fullmatch(expected, said[0]), said
        assert int(re.fullmatch(expected, said[0]).group(1)) > 0
        study = optuna.load_study(study_name="past-the-wait", storage=storage)
        assert study.trials[-1].state in FINISHED
        # The study's own end-of-search writes are journaled too, after the wait.
        owed_line = (
            r"no ensemble yet: ((\d+) MLflow update\(s\) still journaled); `searchsvc sync "
            f"{path}` builds it when MLflow answers \\(so does the next run\\)"
        )
        owed = [m for m in map(lambda x: re.fullmatch(owed_line, x), stderr.splitlines()) if m]
        assert len(owed) == 1, stderr[-3000:]
        assert study.user_attrs["ensemble_owed"] == owed[0].group(1)
        waiting = len(Journal(journal.parent).pending())
        assert waiting > int(owed[0].group(2)) > 0  # the study's end came after
        server.start()
        sync = subprocess.run(
            [sys.executable, "-m", "searchsvc", "sync", str(path), "--tracking-uri", server.url],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert sync.returncode == 0, sync.stderr[-3000:]
        lines = sync.stdout.splitlines()
        assert lines[0] == (
            f"MLflow: wrote {waiting} journaled update(s); checked 3 trial(s) since the last "
            "check, 0 with a problem (tagged searchsvc.reconcile)"
        ), sync.stdout
        assert lines[1] == "the ensemble the run owed:"
        assert "ensemble model: models:/past-the-wait@champion" in lines
        assert MlflowClient(server.url).get_model_version_by_alias("past-the-wait", "champion")
        assert lines[-1] == f"report: {tmp_path / 'w' / 'report' / 'index.html'}"
        assert optuna.load_study(study_name="past-the-wait", storage=storage).user_attrs[
            "ensemble_owed"] is None  # fmt: skip
        assert not journal.parent.exists()
        _every_epoch_once_on_the_server(server.url, tmp_path, "past-the-wait")
        parent = MlflowClient(server.url).search_runs(
            [MlflowClient(server.url).get_experiment_by_name("past-the-wait").experiment_id],
            "tags.`searchsvc.role` = 'parent'",
        )[0]
        assert parent.info.status == "FINISHED"
        assert json.loads(json.dumps(parent.data.tags))["searchsvc.study"] == "past-the-wait"


def _started(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="past-the-wait", storage=storage)
    except Exception:  # not created yet
        return 0
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def test_an_artifact_store_that_refuses_mid_study_is_counted_and_no_trial_runs_twice(tmp_path):
    """The store turns unusable after the first finished trial (its folder replaced by a
    file: even root cannot write under it): every later upload is refused."""
    env = env_with_test_trainers(SLOW_EPOCH_S="0.3", PYTHONWARNINGS="ignore")
    path = _study(tmp_path, "store-refuses", n_trials=4)
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "searchsvc", "run", str(path)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    store = tmp_path / "w" / "mlartifacts"
    _wait_for(lambda: _complete(storage, "store-refuses") >= 1 or driver.poll() is not None)
    store.rename(tmp_path / "w" / "mlartifacts-moved")
    store.write_text("not a folder")
    stdout, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr[-3000:]
    said = stdout + stderr
    refused = re.search(r"MLflow refused (\d+) write\(s\); the log above says which", said)
    assert refused and int(refused.group(1)) >= 1, said[-3000:]
    assert "Traceback" not in stderr
    study = optuna.load_study(study_name="store-refuses", storage=storage)
    assert len(study.trials) == 4, "no trial was asked for again"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert not [t.number for t in study.trials if t.user_attrs.get("interrupted")]
    weights = [t.user_attrs["weights"] for t in study.trials]
    assert "stored" in weights, "the first trial's model went up before the store refused"
    missing = [w for w in weights if w != "stored"]
    assert missing and set(missing) == {
        "missing: upload failed: TrackingError: MLflow refused the model files (see the log)"
    }


def _complete(storage: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
