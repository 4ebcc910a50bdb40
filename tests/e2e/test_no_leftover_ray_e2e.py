"""No Ray processes left behind: a run stops the local Ray it started, and the next run stops
what a driver killed with a bare `kill -9` left running (its agents, its workers). Processes
are found by the session the study's claim recorded, never by name: another Ray cluster on the
host is left alone. Real processes throughout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from searchsvc.execution.leftovers import session_processes, stop_session
from tests.helpers import env_with_test_trainers as _env
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@contextlib.contextmanager
def _another_ray_cluster():
    """A `ray start --head` of its own (as the multi-node test runs), in a short temp folder
    (Unix socket paths are limited to about 100 characters); yields its session folder."""
    temp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    ray_bin = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [ray_bin, "start", "--head", f"--port={free_port()}", "--num-cpus=1",
         "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
        check=True, capture_output=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    session = str((temp / "session_latest").resolve())
    try:
        yield session
    finally:
        stop_session(session)


def _study(tmp_path: Path) -> Path:
    study = {
        "name": "leftovers",
        "trainer": "step_trainer:trainer",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
        "sampler": "random",
        "scheduler": "none",
        "budget": {"n_trials": 2, "max_epochs": 8, "max_concurrent_trials": 1},
        "ensemble": {"enabled": False},
        "workdir": str(tmp_path / "w"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _session_in(log: str) -> str | None:
    """The session of the local Ray a driver started, from its -v log."""
    found = [line.rsplit(" ", 1)[1] for line in log.splitlines()
             if "started a local Ray, session " in line]  # fmt: skip
    return found[0] if found else None


def test_the_next_run_stops_what_a_killed_driver_left_and_leaves_other_clusters_alone(tmp_path):
    path = _study(tmp_path)
    # -v: the driver logs the session of the local Ray it starts (a session of its own).
    command = [sys.executable, "-m", "searchsvc", "-v", "run", str(path)]
    with _another_ray_cluster() as other:
        others = session_processes(other)
        assert others, "the other cluster runs"
        log = tmp_path / "first.log"
        with log.open("w") as sink:
            driver = subprocess.Popen(command, cwd=tmp_path, env=_env(STEP_EPOCH_S="1"),
                                      stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 180
        # The search has started once Ray's trial folder exists: a worker of the driver's
        # session runs the first trial.
        while not (_session_in(log.read_text()) and (tmp_path / "w" / "ray").is_dir()):
            assert driver.poll() is None and time.monotonic() < deadline, "the study ran"
            time.sleep(0.2)
        session = _session_in(log.read_text())
        time.sleep(3)
        os.kill(driver.pid, signal.SIGKILL)  # a bare kill -9: the driver alone
        driver.wait(timeout=60)
        time.sleep(2)
        left = session_processes(session)

        done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        second = _session_in(done.stderr)

        assert left, "the killed driver left processes of its session running"
        assert session_processes(session) == [], "the next run stopped them"
        assert session_processes(second) == [], "the run stopped the Ray it started"
        assert session_processes(other) == others, "the other cluster is left alone"
