"""The study commands on one finished study (noop trainer, run once for the module):
``trials``, ``status --json``; each output compared with the library's answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from searchsvc.cli import app
from searchsvc.inspect.best import best_trials
from searchsvc.inspect.status import study_status
from searchsvc.inspect.target import target_of_run
from searchsvc.inspect.trials import table_records, trials_table
from searchsvc.study.loader import load_study
from searchsvc.study_run import StudyRun
from tests.helpers import base_study

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A study file whose 4-trial noop study has run (its folder named in the file)."""
    folder = tmp_path_factory.mktemp("finished")
    path = folder / "study.yaml"
    study = base_study(name="finished", workdir=str(folder / "runs"))
    study["ensemble"] = {"enabled": False}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}
    done = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", str(path)], cwd=folder, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield path


def _cli(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, result.stdout, result.stderr


def _run(path: Path) -> StudyRun:
    return StudyRun.prepare(load_study(path))


def test_trials_json_is_the_library_table(finished: Path) -> None:
    code, stdout, stderr = _cli("trials", str(finished), "--json")

    assert code == 0, stderr
    expected = table_records(trials_table(target_of_run(_run(finished))))
    assert json.loads(stdout) == expected
    assert [row["number"] for row in expected] == [0, 1, 2, 3]
    assert {row["state"] for row in expected} <= {"COMPLETE", "PRUNED"}


def test_trials_rows_name_each_trials_mlflow_run(finished: Path) -> None:
    run = _run(finished)
    frame = trials_table(target_of_run(run))
    client = MlflowClient(tracking_uri=run.paths.tracking_uri)

    for number, run_id in zip(frame["number"], frame["mlflow_run_id"], strict=True):
        assert client.get_run(run_id).data.tags["searchsvc.trial_number"] == str(number)


def test_trials_csv_with_a_state_filter(finished: Path) -> None:
    frame = trials_table(target_of_run(_run(finished)), ("PRUNED", "FAIL"))

    code, stdout, stderr = _cli(
        "trials", str(finished), "--format", "csv", "--state", "pruned,fail"
    )

    assert code == 0, stderr
    assert stdout == frame.to_csv(index=False)
    assert set(frame["state"]) <= {"PRUNED", "FAIL"}


def test_trials_by_name_and_storage_reads_the_same_rows(finished: Path) -> None:
    run = _run(finished)

    code, stdout, stderr = _cli(
        "trials", "--name", "finished", "--storage", run.paths.storage_url, "--json"
    )

    assert code == 0, stderr
    assert json.loads(stdout) == table_records(trials_table(target_of_run(run)))


def test_status_json_is_the_library_status(finished: Path) -> None:
    code, stdout, stderr = _cli("status", str(finished), "--json")

    assert code == 0, stderr
    expected = study_status(_run(finished)).to_dict()
    assert json.loads(stdout) == expected
    assert expected["finished"] == 4 and expected["name"] == "finished"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "xml"], "error: --format: unknown format 'xml'; expected table, csv, json"),
        (["--state", "done"], "error: --state: unknown state 'done'; expected one of: complete, "
                              "pruned, fail, interrupted, running, waiting"),
        (["--set", "budget"], "error: --set budget: expected key.path=value, e.g. "
                              "budget.n_trials=3"),
    ],
)  # fmt: skip
def test_trials_bad_input_is_one_line_exit_2(finished: Path, arguments, message) -> None:
    code, stdout, stderr = _cli("trials", str(finished), *arguments)

    assert (code, stdout, stderr) == (2, "", message + "\n")


def test_trials_needs_a_file_or_a_name(finished: Path) -> None:
    code, _, stderr = _cli("trials")

    assert (code, stderr) == (
        2,
        "error: give a study file or --name NAME --storage URL (not both)\n",
    )


def test_best_json_is_the_library_answer(finished: Path) -> None:
    code, stdout, stderr = _cli("best", str(finished), "--json")

    assert code == 0, stderr
    found = best_trials(target_of_run(_run(finished)))
    assert json.loads(stdout) == [trial.to_dict() for trial in found]
    frame = trials_table(target_of_run(_run(finished)), ("COMPLETE",))
    assert found[0].values[0] == frame["val_loss"].min()  # the study minimises val_loss
    assert found[0].params["batch_size"] == 128  # the file's constant is part of it


def test_best_fragment_merged_into_a_study_runs_exactly_those_params(
    finished: Path, tmp_path: Path
) -> None:
    code, _, stderr = _cli("best", str(finished), "-o", str(tmp_path / "best.yaml"))
    assert code == 0, stderr
    fragment = yaml.safe_load((tmp_path / "best.yaml").read_text())
    study = base_study(
        name="from-best", budget={"n_trials": 1, "max_epochs": 1}, workdir=str(tmp_path / "runs"),
        **fragment,
    )  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}

    done = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", str(path), "--no-ensemble"], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    best = best_trials(target_of_run(_run(finished)))[0]
    (row,) = table_records(trials_table(target_of_run(_run(path))))
    client = MlflowClient(tracking_uri=_run(path).paths.tracking_uri)
    logged = client.get_run(row["mlflow_run_id"]).data.params
    assert {k: v for k, v in logged.items() if k != "seed"} == {
        k: str(v) for k, v in best.params.items()
    }
