"""Every exit path of ``searchsvc run`` is clean: a signal or an error at each stage boundary.

Each test runs the real command line (real Ray, Optuna SQLite, MLflow SQLite) on a study whose
plug-in trainer lies beside the study file, stops it in one stage (Ctrl-C or SIGTERM, or an
injected error), and asserts the exit code, the printed resume command, the MLflow parent
run's status and that the driver's claim on the study was released.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from searchsvc.search.claim import holder_of
from tests.helpers import TESTS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

HOOK = TESTS / "stage_hook.py"
NAME = "lifecycle"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with only a study file and its trainer module (no PYTHONPATH needed)."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(TESTS / "step_trainer.py", folder / "steptrainer.py")
    study = {
        "name": NAME,
        "trainer": "steptrainer:trainer",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
        "sampler": "random",
        "scheduler": "none",
        "budget": {"n_trials": 2, "max_epochs": 3, "max_concurrent_trials": 1},
        "ensemble": {"method": "top_k", "size": 2, "candidates": 2},
        "seed": 3,
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return folder


def _start(project: Path, *hook: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, str(HOOK), *hook] if hook else [sys.executable, "-m", "searchsvc"]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    environment.pop("PYTHONPATH", None)  # the trainer must import from the study's folder
    return subprocess.Popen(
        [*command, "run", "study.yaml"], cwd=project, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT at its default in the run, as in a terminal's foreground: a suite started in the
    background (``cmd &``) ignores SIGINT, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(marker: Path, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before the stage:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the stage was never reached")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, signum: int) -> tuple[str, str]:
    proc.send_signal(signum)
    return proc.communicate(timeout=180)


def _parent_status(project: Path) -> str | None:
    store = project / "runs" / NAME / "mlflow.db"
    if not store.exists():
        return None
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`searchsvc.role` = 'parent'"
    )
    (parent,) = runs
    return parent.info.status


def _study(project: Path) -> optuna.Study:
    storage = f"sqlite:///{project / 'runs' / NAME / 'optuna.db'}"
    return optuna.load_study(study_name=NAME, storage=storage)


def _assert_released(project: Path) -> None:
    study = _study(project)
    storage = f"sqlite:///{project / 'runs' / NAME / 'optuna.db'}"
    assert holder_of(storage, NAME) is None, "the driver's claim is released"
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]


def test_ctrl_c_while_loading_the_data_creates_nothing_and_says_how_to_resume(
    project: Path,
) -> None:
    marker = project.parent / "in-stage"
    proc = _start(project, "block", "searchsvc.data.datasets:load_dataset", str(marker))
    _wait_for(marker, proc)
    stdout, stderr = _stop(proc, signal.SIGINT)

    assert proc.returncode == 130, stderr[-3000:]
    assert (
        "interrupted while loading the data; finished trials are kept. "
        "Resume with: searchsvc run study.yaml" in stdout
    )
    assert "Traceback" not in stderr
    # Nothing had started: no study folder, no store, so no parent run and no claim.
    assert sorted(p.name for p in project.iterdir()) == ["steptrainer.py", "study.yaml"]


def test_sigterm_during_the_search_kills_the_parent_run_and_the_resume_finishes(
    project: Path,
) -> None:
    marker = project.parent / "epoch-done"
    env = {"STEP_MARKER": str(marker), "STEP_EPOCH_S": "1"}
    proc = _start(project, env=env)
    _wait_for(marker, proc)
    stdout, stderr = _stop(proc, signal.SIGTERM)

    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted by SIGTERM while searching; finished trials are kept." in stdout
    resume = stdout.split("Resume with: ", 1)[1].split("\n", 1)[0].strip()
    assert resume == "searchsvc run study.yaml"
    assert "Traceback" not in stderr
    assert _parent_status(project) == "KILLED"
    _assert_released(project)

    again = subprocess.run(
        [sys.executable, "-m", "searchsvc", *shlex.split(resume)[1:]], cwd=project,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert _parent_status(project) == "FINISHED"
    complete = _study(project).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2


def test_ctrl_c_while_building_the_ensemble_kills_the_parent_run(project: Path) -> None:
    marker = project.parent / "in-stage"
    target = "searchsvc.ensemble.build:build_study_ensemble"
    proc = _start(project, "block", target, str(marker))
    _wait_for(marker, proc)
    stdout, stderr = _stop(proc, signal.SIGINT)

    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted while building the ensemble; finished trials are kept." in stdout
    assert "Resume with: searchsvc run study.yaml" in stdout
    assert "Traceback" not in stderr
    assert _parent_status(project) == "KILLED"
    _assert_released(project)


def test_sigterm_while_writing_the_report_kills_the_parent_run(project: Path) -> None:
    marker = project.parent / "in-stage"
    proc = _start(project, "block", "searchsvc.report.build:write_report", str(marker))
    _wait_for(marker, proc)
    stdout, stderr = _stop(proc, signal.SIGTERM)

    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted by SIGTERM while writing the report; finished trials are kept." in stdout
    assert "Resume with: searchsvc run study.yaml" in stdout
    assert "Traceback" not in stderr
    assert _parent_status(project) == "KILLED"
    _assert_released(project)


def test_an_error_in_a_stage_fails_the_parent_run_with_one_line_and_the_resume_command(
    project: Path,
) -> None:
    marker = project.parent / "in-stage"
    target = "searchsvc.execution.runner:_summarise"
    proc = _start(project, "raise", target, str(marker))
    stdout, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 1, stderr[-3000:]
    assert stderr.splitlines()[-2:] == [
        "error: study.yaml: failed while summarising the search: RuntimeError: injected "
        "failure (run with -v for the traceback)",
        "finished trials are kept; resume with: searchsvc run study.yaml",
    ]
    assert "Traceback" not in stderr
    assert _parent_status(project) == "FAILED"
    _assert_released(project)


def test_an_error_in_the_ensemble_build_still_ends_the_study(project: Path) -> None:
    marker = project.parent / "in-stage"
    target = "searchsvc.ensemble.build:build_study_ensemble"
    proc = _start(project, "raise", target, str(marker))
    stdout, stderr = proc.communicate(timeout=300)

    assert proc.returncode == 0, stderr[-3000:]
    assert (
        "no ensemble: the build failed (RuntimeError: injected failure); rerun `searchsvc "
        "ensemble study.yaml` to build it"
    ) in stderr.splitlines()
    assert "Traceback" not in stderr
    assert _parent_status(project) == "FINISHED"
    assert (project / "runs" / NAME / "report" / "index.html").is_file(), "the report is written"
    _assert_released(project)
