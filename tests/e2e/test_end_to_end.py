"""A real tiny study through real Ray, Optuna storage and MLflow (no mocks), then its ensemble.

One study run is shared by the assertions (module fixture), so the suite pays for Ray once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from searchsvc import load_ensemble
from searchsvc.data.datasets import load_dataset
from searchsvc.errors import EnsembleError
from searchsvc.execution.quiet import RAY_ENV
from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study
from tests.helpers import clean_env
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STUDY = {
    "name": "tiny-mnist",
    "trainer": "mlp",
    "dataset": {"name": "mnist", "val_size": 1000, "train_subset": 3000},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "n_layers": {"type": "int", "low": 1, "high": 2},
        "width_1": {"type": "int", "low": 32, "high": 96},
        "width_2": {"type": "int", "low": 16, "high": 64, "when": "n_layers >= 2"},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
        "optimizer": "adam",
        "batch_size": 64,
    },
    "sampler": {"name": "tpe", "n_startup_trials": 3},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"n_trials": 5, "max_epochs": 2, "max_concurrent_trials": 2},
    "ensemble": {"method": "greedy", "size": 4, "candidates": 4},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("e2e")
    study_file = folder / "tiny.yaml"
    spec = {**STUDY, "dataset": {**STUDY["dataset"], "data_dir": str(data_dir)}}
    spec["workdir"] = str(folder / "work")
    study_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    # Run from the study's folder, so anything written to the current folder shows there.
    before = os.getcwd()
    environment = dict(os.environ)
    os.chdir(folder)
    try:
        result = run_study(load_study(study_file), console=Console(quiet=True))
    finally:
        os.chdir(before)
    return study_file, result, environment, dict(os.environ)


def test_a_library_run_leaves_the_process_environment_as_it_was(finished):
    _, _, before, after = finished
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # What Ray's own driver sets for the process stays (see quiet.quiet_libraries).
    rays = {k for k in changed if k.startswith(("RAY_", "KMP_")) or k == "PYTHONBREAKPOINT"}
    # `import mlflow` starts a telemetry thread that unsets this one when its config fetch
    # fails (no internet here), whenever that happens: MLflow's, not a run's, doing.
    changed.discard("_MLFLOW_TELEMETRY_SESSION_ID")
    assert sorted(changed - rays) == []
    assert not rays & set(RAY_ENV), "searchsvc's own Ray settings are taken back"


def test_nothing_is_written_outside_the_study_folder(finished):
    study_file, result, _, _ = finished
    # MLflow's default store is ./mlflow.db: any client left on the default would create it.
    assert sorted(p.name for p in study_file.parent.iterdir()) == ["tiny.yaml", "work"]


def _children(result):
    client = MlflowClient(result.paths.tracking_uri)
    experiment = client.get_experiment_by_name("tiny-mnist")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    return client, runs


def test_budget_is_spent_and_every_trial_is_accounted_for(finished):
    _, result, _, _ = finished
    assert result.finished == 5
    assert result.complete >= 1
    storage = optuna.load_study(study_name="tiny-mnist", storage=result.paths.storage_url)
    states = [t.state for t in storage.trials]
    assert len(states) == 5
    assert optuna.trial.TrialState.RUNNING not in states
    for trial in storage.trials:
        assert trial.intermediate_values, "every epoch's value reaches Optuna"
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert len(trial.intermediate_values) < 2
            assert trial.user_attrs["reason"].startswith("stopped by asha")


def test_mlflow_has_one_parent_and_one_child_per_trial(finished):
    _, result, _, _ = finished
    client, runs = _children(result)
    assert len(runs) == 5
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["trainer"] == "mlp"
    assert "study.yaml" in [a.path for a in client.list_artifacts(result.parent_run_id)]
    numbers = sorted(int(r.data.tags["searchsvc.trial_number"]) for r in runs)
    assert numbers == [0, 1, 2, 3, 4]
    for run in runs:
        state = run.data.tags["searchsvc.state"]
        assert state in {"COMPLETE", "PRUNED"}
        assert run.info.status == ("FINISHED" if state == "COMPLETE" else "KILLED")
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert {"train_loss", "val_loss", "act_std_1"} <= set(run.data.metrics)
        assert run.data.tags["searchsvc.node_ip"]
        diagnosis = run.data.tags["searchsvc.diagnosis"]
        assert diagnosis in {"underfit", "overfit", "healthy", "diverged"}
        assert run.data.tags["searchsvc.advice"]
        if state == "COMPLETE":
            artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
            assert sorted(artifacts) == ["model/params.json", "model/state_dict.pt"]


def test_ensemble_is_registered_and_reported_beside_the_best_single(finished):
    _, result, _, _ = finished
    summary = result.ensemble
    assert summary is not None and summary.members
    for key in ("best_single", "ensemble"):
        scores = getattr(summary, key)
        assert 0.8 < scores.accuracy <= 1.0
        assert scores.nll > 0 and 0 <= scores.ece < 1
    client = MlflowClient(result.paths.tracking_uri)
    version = client.get_model_version_by_alias("tiny-mnist", "champion")
    assert str(version.version) == str(summary.version)
    metrics = client.get_run(result.parent_run_id).data.metrics
    assert {"test_accuracy_ensemble", "test_nll_best_single", "test_ece_ensemble"} <= set(metrics)


def test_load_ensemble_predicts_mnist_from_the_study_file(finished, data_dir):
    study_file, _, _, _ = finished
    ensemble = load_ensemble(study_file)
    data = load_dataset("mnist", data_dir=data_dir)
    labels = ensemble.predict(data.x_test[:2000])
    assert (labels == data.y_test[:2000]).mean() > 0.85
    probs = ensemble.predict_proba(data.x_test[:10].reshape(10, 28, 28))
    assert probs.shape == (10, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(EnsembleError, match="wrong number of features: expected 784, got 10"):
        ensemble.predict(np.zeros((3, 10), dtype=np.float32))


def test_pyfunc_model_loads_in_a_fresh_process_by_registry_uri(finished, tmp_path):
    _, result, _, _ = finished
    code = (
        "import mlflow, numpy as np\n"
        "m = mlflow.pyfunc.load_model('models:/tiny-mnist@champion')\n"
        "p = m.predict(np.zeros((3, 784), dtype=np.float32))\n"
        "print(p.shape)\n"
    )
    env = {"MLFLOW_TRACKING_URI": result.paths.tracking_uri, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("(3, 10)")


def test_running_again_continues_the_study_without_duplicates(finished):
    study_file, first, _, _ = finished
    result = run_study(load_study(study_file), n_trials=7, console=Console(quiet=True),
                       build_ensemble=False)  # fmt: skip
    assert result.finished == 7
    assert result.parent_run_id == first.parent_run_id
    _, runs = _children(result)
    numbers = sorted(int(r.data.tags["searchsvc.trial_number"]) for r in runs)
    assert numbers == list(range(7)), "one MLflow run per trial, none rerun"
    again = run_study(load_study(study_file), n_trials=7, console=Console(quiet=True),
                      build_ensemble=False)  # fmt: skip
    assert again.finished == 7
    assert len(_children(again)[1]) == 7
    # `status` measures progress against the budget of the last run (--n-trials), not the file's.
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "status", str(study_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "7/7 finished" in proc.stdout


def test_status_command_reads_the_counts(finished):
    study_file, result, _, _ = finished
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "status", str(study_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "complete" in proc.stdout and "best: trial" in proc.stdout
    assert "diagnosis: " in proc.stdout
    assert json.dumps(result.paths.storage_url)[1:-1] in proc.stdout


def test_unknown_model_uri_is_a_clear_error(finished):
    _, result, _, _ = finished
    with pytest.raises(EnsembleError, match=r"cannot load ensemble models:/no-such@champion .*"):
        load_ensemble("models:/no-such@champion", tracking_uri=result.paths.tracking_uri)


def test_predict_command_writes_labels_and_refuses_a_bad_array(finished, data_dir, tmp_path):
    study_file, _, _, _ = finished
    data = load_dataset("mnist", data_dir=data_dir)
    images = tmp_path / "images.npy"
    np.save(images, data.x_test[:20].reshape(20, 28, 28))
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "predict", str(study_file), str(images)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    labels = [int(line) for line in proc.stdout.split()]
    assert len(labels) == 20 and np.mean(np.array(labels) == data.y_test[:20]) > 0.7
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 784), np.nan, dtype=np.float32))
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "predict", str(study_file), str(bad)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "NaN" in proc.stderr and "Traceback" not in proc.stderr


def _post(base: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/invocations", data=data, headers={"Content-Type": "application/json"},
        method="POST",
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(finished, tmp_path):
    """`searchsvc serve STUDY --port P` as the README runs it, until the test ends."""
    study_file, _, _, _ = finished
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "searchsvc", "serve", str(study_file), "--port", str(port)],
        cwd=tmp_path, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "searchsvc serve not ready within 120 s"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_serve_answers_like_the_python_api_and_refuses_in_one_line(served, finished, data_dir):
    study_file, _, _, _ = finished
    ensemble = load_ensemble(study_file)
    x = load_dataset("mnist", data_dir=data_dir).x_test[:50].reshape(50, 784)
    status, reply = _post(served, json.dumps({"inputs": x.tolist()}).encode())
    assert status == 200
    expected_probs = ensemble.predict_proba(x)
    np.testing.assert_allclose(np.array(reply["predictions"]), expected_probs, atol=1e-5)
    nan_row = np.zeros((1, 784), np.float32)
    nan_row[0, 0] = np.nan
    pixels = np.rint(x[:2] * 255).astype(int)  # 0-255 integers, as a client forgetting to scale
    refused = {
        "integer pixels": (json.dumps({"inputs": pixels.tolist()}), pixels.astype(np.float32)),
        "feature count": (json.dumps({"inputs": [[0.5] * 10]}), np.full((1, 10), 0.5, np.float32)),
        "NaN": ('{"inputs": [[NaN' + ", 0.0" * 783 + "]]}", nan_row),
        "empty batch": (json.dumps({"inputs": []}), np.zeros((0,), np.float32)),
    }
    expected = {
        "integer pixels": "input values span [0, 255] but the training features spanned [0, 1] "
        "(accepted [-0.5, 1.5]; 2 of 2 rows outside): scale the input like the training data; "
        "if these are 0-255 pixels, divide by 255",
        "feature count": "wrong number of features: expected 784, got 10",
        "NaN": "input contains 1 NaN and 0 inf values; all values must be finite",
        "empty batch": "input is empty: shape (0,)",
    }
    for case, (body, array) in refused.items():
        with pytest.raises(EnsembleError) as python_api:
            ensemble.predict_proba(array)
        assert str(python_api.value) == expected[case], case
        assert _post(served, body.encode()) == (
            400, {"error_code": "BAD_REQUEST", "message": expected[case]},
        ), case  # fmt: skip


def test_an_owed_ensemble_is_shown_by_status_and_built_by_the_next_run(finished):
    study_file, first, _, _ = finished
    study = optuna.load_study(study_name=STUDY["name"], storage=first.paths.storage_url)
    study.set_user_attr("ensemble_owed", "tracking server unreachable: ConnectionError")
    status = [sys.executable, "-m", "searchsvc", "status", str(study_file)]
    owed = subprocess.run(status, capture_output=True, text=True, timeout=120)
    assert owed.returncode == 0, owed.stderr
    assert (
        "ensemble owed: tracking server unreachable: ConnectionError "
        f"(`searchsvc sync {study_file}` builds it)"
    ) in owed.stdout.splitlines()
    again = run_study(load_study(study_file), console=Console(quiet=True))  # no trial left to run
    assert again.ensemble is not None
    study = optuna.load_study(study_name=STUDY["name"], storage=first.paths.storage_url)
    assert study.user_attrs["ensemble_owed"] is None
    settled = subprocess.run(status, capture_output=True, text=True, timeout=120)
    assert [line for line in settled.stdout.splitlines() if "owed" in line] == []
