"""``searchsvc dashboard``: optuna-dashboard on a finished study's storage, on loopback; its
HTTP API answers with the trials Optuna stores. One noop study, run once for the module."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from searchsvc.study.loader import load_study
from searchsvc.study_run import StudyRun
from tests.helpers import base_study, clean_env, searchsvc_cli
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study file whose 4-trial noop study has run."""
    folder = tmp_path_factory.mktemp("dashboard")
    path = folder / "study.yaml"
    study = base_study(name="dash", workdir=str(folder / "runs"), ensemble={"enabled": False})
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    done = searchsvc_cli(folder, "run", str(path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _wait_for(server: subprocess.Popen, url: str) -> Any:
    """The first answer of ``url``, polled while the server starts (it must not exit)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard exited {server.returncode}: {server.communicate()[1]}")
        try:
            return _get(url)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within 120 s")


def test_dashboard_serves_the_trials_optuna_stores(finished: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "searchsvc", "dashboard", str(finished), "--port", str(port)],
        cwd=finished.parent, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        listing = _wait_for(server, f"http://127.0.0.1:{port}/api/studies")
        (summary,) = listing["study_summaries"]
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=60)
    storage = StudyRun.prepare(load_study(finished)).paths.storage_url
    trials = optuna.load_study(study_name="dash", storage=storage).trials
    served = {
        t["number"]: ({p["name"]: p["param_external_value"] for p in t["params"]}, t["values"])
        for t in detail["trials"]
    }
    assert served == {
        t.number: ({k: str(v) for k, v in t.params.items()}, t.values) for t in trials
    }
    assert summary["study_name"] == "dash" and len(trials) == 4
    assert (server.returncode, stdout) == (0, "")  # SIGTERM stops it as Ctrl-C does
    lines = stderr.splitlines()
    assert lines[0] == (
        f"optuna-dashboard of study 'dash': http://127.0.0.1:{port}/dashboard/studies/"
        f"{summary['study_id']}  (Ctrl-C stops it)"
    )
    assert lines[-1] == "dashboard stopped"


def test_dashboard_on_a_taken_port_is_one_line_exit_1(finished: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = searchsvc_cli(finished.parent, "dashboard", str(finished), "--port", str(port))

    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"error: --port {port}: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already "
        "in use"
    )
