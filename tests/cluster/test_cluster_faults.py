"""Beyond one machine, for real on one machine: two Ray nodes, PostgreSQL, an MLflow server,
and the faults clusters have (a worker killed, the driver killed, the tracking server
restarting, the database connection dropping). Nothing here is mocked."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster
from rich.console import Console

from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study
from tests.helpers import TESTS, base_study
from tests.servers import MlflowServer, drop_connections, free_port, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _digits_study(name: str, workdir: Path, *, n_trials: int, epochs: int) -> dict:
    study = base_study(
        name=name,
        trainer="mlp",
        dataset="digits",
        objective={"metric": "val_accuracy", "mode": "max"},
        search_space={
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "width_1": {"type": "int", "low": 16, "high": 48},
            "n_layers": 1,
            "batch_size": 32,
        },
        scheduler="none",
        budget={"n_trials": n_trials, "max_epochs": epochs, "max_concurrent_trials": 2},
        workdir=str(workdir),
    )
    study["ensemble"] = {"enabled": False}
    return study


def _finished(storage: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        return len(study.get_trials(deepcopy=False, states=FINISHED))
    except Exception:  # not created yet
        return 0


def _wait_for(predicate, timeout: float = 240.0, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(interval)


def _child_runs(tracking_uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`searchsvc.trial_number` != ''"
    )


@contextlib.contextmanager
def _ray_cluster_of_two_nodes(tmp_path: Path) -> Iterator[str]:
    """``ray start --head`` on loopback and a second node joined to it, one CPU each, as
    separate process groups (stopped by signal: ``ray stop`` would stop every Ray here)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
              "--disable-usage-stats"]  # fmt: skip
    head = [ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false"]
    worker = [ray_bin, "start", "--address", address]
    nodes = []
    try:
        for n, command in enumerate((head + common, worker + common)):
            log = (tmp_path / f"ray-node-{n}.log").open("w")
            nodes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, env=NO_RAY_AUTH))  # fmt: skip
            if n == 0:
                _wait_for(lambda: _ray_nodes(address) >= 1, timeout=120, interval=2.0)
        _wait_for(lambda: _ray_nodes(address) >= 2, timeout=120, interval=2.0)
        yield address
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


# Ray 2.60 turns token authentication on when a token file exists (created by any earlier
# ray.init here), and a driver naming an address must then be given the token: this test
# cluster runs without it, so the outcome does not depend on the tests that ran before.
NO_RAY_AUTH = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _ray_nodes(address: str) -> int:
    """Alive nodes of the cluster at ``address``, asked by a throw-away driver."""
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR', "
        "log_to_driver=False); print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=NO_RAY_AUTH)  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if proc.returncode == 0 and lines and lines[-1].isdigit() else 0


def test_two_nodes_postgres_and_tracking_server_survive_a_dropped_db_connection(
    write_study, tmp_path
):
    with (
        postgres_server() as pg,
        MlflowServer(f"{pg}/mlflow", tmp_path / "artifacts") as server,
        _ray_cluster_of_two_nodes(tmp_path) as address,
    ):
        storage = f"{pg}/optuna"
        path = write_study(_digits_study("multinode", tmp_path / "w", n_trials=6, epochs=4))
        dropped: list[int] = []
        stderr = tmp_path / "run.stderr"
        stderr.touch()

        def retried() -> bool:
            return "; retry 1 in" in stderr.read_text()

        def drop_once() -> None:
            _wait_for(lambda: _finished(storage, "multinode") >= 1)
            # Refused until the run has retried a storage call (at most 20 s, inside the
            # retries' 31.5 s), not for a fixed window that might fall between two calls.
            dropped.append(drop_connections(pg, "optuna", refuse_for_s=20.0, refuse_until=retried))

        dropper = threading.Thread(target=drop_once, daemon=True)
        dropper.start()
        # The command a user runs against a cluster and a tracking server.
        with stderr.open("w") as err:
            proc = subprocess.run(
                [sys.executable, "-m", "searchsvc", "run", str(path), "--address", address,
                 "--tracking-uri", server.url, "--storage", storage],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path, timeout=600,
                env={**NO_RAY_AUTH, "PYTHONWARNINGS": "ignore"},
            )  # fmt: skip
        dropper.join(timeout=60)
        logged = stderr.read_text()
        assert proc.returncode == 0, logged[-3000:]
        assert dropped and dropped[0] >= 1, "the database connection was really dropped"
        assert "Optuna storage: " in logged and "; retry 1 in" in logged, (
            "storage calls failed while the database refused connections, and were retried"
        )

        final = optuna.load_study(study_name="multinode", storage=storage)
        assert [t.state for t in final.trials].count(optuna.trial.TrialState.COMPLETE) == 6
        runs = _child_runs(server.url, "multinode")
        assert sorted(int(r.data.tags["searchsvc.trial_number"]) for r in runs) == list(range(6))
        assert len({r.data.tags["searchsvc.node_id"] for r in runs}) == 2, "both nodes ran trials"
        client = MlflowClient(server.url)
        for run in runs:
            assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 4
            files = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
            assert "model/state_dict.pt" in files


def test_killed_worker_retries_from_its_checkpoint_with_one_mlflow_run(
    write_study, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    study = base_study(
        name="kill-worker",
        trainer="fault_trainers:kill_once",
        scheduler="none",
        budget={"n_trials": 4, "max_epochs": 3, "max_concurrent_trials": 2, "max_failures": 2},
        workdir=str(tmp_path / "w"),
    )
    study["search_space"] = {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "marker": str(tmp_path / "killed"),
    }
    study["ensemble"] = {"enabled": False}
    result = run_study(load_study(write_study(study)), console=Console(quiet=True))

    assert (tmp_path / "killed").exists(), "a worker was killed"
    assert list(tmp_path.glob("resumed-*-1")), "the trial resumed from its epoch-1 checkpoint"
    assert result.finished == 4 and result.failed == 0
    runs = _child_runs(result.paths.tracking_uri, "kill-worker")
    numbers = Counter(r.data.tags["searchsvc.trial_number"] for r in runs)
    assert len(numbers) == 4 and set(numbers.values()) == {1}, "one MLflow run per trial"
    client = MlflowClient(result.paths.tracking_uri)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2, 3]


def _mid_trial_checkpoint(storage: str, name: str, epochs: int) -> bool:
    """A trial is running with a checkpoint past its first epoch and before its last."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # not created yet
        return False
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return any(
        2 <= t.user_attrs.get("checkpoint", {}).get("epoch", 0) < epochs - 1 for t in running
    )


def test_killed_driver_resumes_to_exactly_the_budget(write_study, tmp_path):
    epochs = 20
    path = write_study(_digits_study("kill-driver", tmp_path / "w", n_trials=6, epochs=epochs))
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    command = [sys.executable, "-m", "searchsvc", "run", str(path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "first-driver.log"
    with log.open("w") as sink:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                                  stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for(
            lambda: (
                (
                    _finished(storage, "kill-driver") >= 1
                    and _mid_trial_checkpoint(storage, "kill-driver", epochs)
                )
                or driver.poll() is not None
            ),
            interval=0.1,
        )
        assert driver.poll() is None, (
            f"the study ended before the driver could be killed:\n{log.read_text()[-3000:]}"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait(timeout=60)
    before = _finished(storage, "kill-driver")
    assert before < 6

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = optuna.load_study(study_name="kill-driver", storage=storage)
    states = Counter(t.state for t in final.trials)
    assert states[optuna.trial.TrialState.COMPLETE] == 6
    assert states[optuna.trial.TrialState.RUNNING] == 0
    interrupted = [t for t in final.trials if t.user_attrs.get("interrupted")]
    assert interrupted, "the kill left a trial mid-way"
    successors = {
        t.user_attrs["resume_of"]: t for t in final.trials if "resume_of" in t.user_attrs
    }
    assert sorted(successors) == sorted(t.number for t in interrupted)
    # Resumed from its checkpoint: the successor owns every epoch's value, once.
    for trial in successors.values():
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))

    every_run = _child_runs(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}", "kill-driver")
    runs = [r for r in every_run if r.data.tags["searchsvc.state"] == "COMPLETE"]
    assert len(runs) == 6, "one MLflow run per finished trial: interrupted runs were continued"
    numbers = Counter(int(r.data.tags["searchsvc.trial_number"]) for r in runs)
    assert sorted(numbers) == sorted(
        t.number for t in final.trials if t.state == optuna.trial.TrialState.COMPLETE
    )
    # A trial killed before its first checkpoint has nothing to continue: its successor starts
    # afresh in a run of its own, and the interrupted run names it.
    complete_ids = {r.info.run_id for r in runs}
    for run in every_run:
        if run.info.run_id not in complete_ids:
            assert run.data.tags["searchsvc.state"] == "INTERRUPTED"
            assert run.data.tags["searchsvc.superseded_by"] in complete_ids
    client = MlflowClient(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    continued = [r for r in runs if "searchsvc.resumed_from_trial" in r.data.tags]
    assert continued, "an interrupted trial's run was continued"
    for run in continued:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert sorted(set(steps)) == list(range(1, epochs + 1))
        assert len(steps) <= epochs + 1, "at most the epoch of the kill is logged twice"
        # One seed rule: the seed it trained with is the first trial's, in MLflow's params and
        # in the stored model's params.json alike.
        first = int(run.data.tags["searchsvc.resumed_from_trial"])
        while "resume_of" in final.trials[first].user_attrs:
            first = final.trials[first].user_attrs["resume_of"]
        assert run.data.params["seed"] == str(first)  # the study's seed is 0
        into = tmp_path / f"model-{run.info.run_id}"
        into.mkdir()
        model = Path(client.download_artifacts(run.info.run_id, "model", str(into)))
        assert json.loads((model / "params.json").read_text())["seed"] == first


def test_tracking_server_down_mid_study_loses_no_metric(write_study, tmp_path):
    with MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as server:
        path = write_study(_digits_study("server-restart", tmp_path / "w", n_trials=6, epochs=6))
        storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
        command = [sys.executable, "-m", "searchsvc", "run", str(path),
                   "--tracking-uri", server.url]  # fmt: skip
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_for(lambda: _finished(storage, "server-restart") >= 1 or driver.poll() is not None)
        server.stop()
        time.sleep(8)
        server.start()
        _, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr[-3000:]
        assert "unreachable" in stderr and "deferring" in stderr, "the outage was noticed"
        assert "answers again" in stderr

        runs = _child_runs(server.url, "server-restart")
        assert sorted(int(r.data.tags["searchsvc.trial_number"]) for r in runs) == list(range(6))
        client = MlflowClient(server.url)
        for run in runs:
            assert run.data.tags["searchsvc.state"] == "COMPLETE"
            history = client.get_metric_history(run.info.run_id, "val_loss")
            assert [m.step for m in history] == list(range(1, 7))


def test_fractional_gpu_trials_go_to_the_gpu_node_and_fall_back_to_cpu(write_study, tmp_path):
    """A mixed cluster: a CPU-only head and a node declaring one GPU (there is no real GPU here,
    so CUDA is unavailable and the trainer must fall back to the CPU). gpus: 0.5 per trial puts
    the trials on the GPU node only, two at a time."""
    study = _digits_study("mixed-cluster", tmp_path / "w", n_trials=4, epochs=2)
    study["resources"] = {"cpus": 1, "gpus": 0.5}
    path = write_study(study)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    try:
        result = run_study(load_study(path), address=cluster.address, console=Console(quiet=True))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.finished == 4 and result.complete == 4
    runs = _child_runs(result.paths.tracking_uri, "mixed-cluster")
    assert {r.data.tags["searchsvc.node_id"] for r in runs} == {gpu_node.node_id}
