"""Bad input that used to pass `validate` and fail mid-run is one error line, exit 2, before
anything exists: a range end the trainer rejects, a `when:` condition of the wrong type, a data
file that is not there, a Ray address where no cluster answers, an MLflow tracking server that
does not answer. Real CLI processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import base_study
from tests.servers import free_port

pytestmark = [pytest.mark.slow]

PORT = free_port()  # nothing listens there


def _write(folder: Path, **changes) -> Path:
    study = base_study(name="preflight", trainer="mlp", **changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _cli(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "searchsvc", *arguments],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


CASES = {
    "a range end the trainer rejects": (
        {"search_space": {"dropout": {"type": "float", "low": 0.0, "high": 1.5}}},
        [],
        "study.yaml: search_space -> dropout: trainer 'mlp' rejects it: dropout: must be < 1.0, "
        "got 1.5",
    ),
    "a condition comparing strings with a number": (
        {"search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": "optimizer >= 2"},
        }},
        [],
        "study.yaml: search_space -> momentum: condition 'optimizer >= 2' cannot be evaluated "
        "on 'optimizer', whose values are 'adam', 'sgd': '>=' not supported between instances "
        "of 'str' and 'int'",
    ),
    "a data file that is not there": (
        {"dataset": {"name": "npz", "path": "missing.npz"}},
        [],
        "study.yaml: dataset -> path: missing.npz: no such file",
    ),
    "a Ray address where no cluster answers": (
        {},
        ["--address", f"127.0.0.1:{PORT}"],
        f"--address: no Ray cluster answers at 127.0.0.1:{PORT} (Connection refused)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_is_created(case, command, tmp_path):
    changes, options, message = CASES[case]
    path = _write(tmp_path, **changes)
    proc = _cli(tmp_path, command, path.name, *options)
    assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"], "nothing created"


# `validate` has no --tracking-uri: the study file names the server there (with a password,
# which must not be shown).
DOWN = {
    "run": ({}, ["--tracking-uri", f"http://127.0.0.1:{PORT}"], f"http://127.0.0.1:{PORT}"),
    "validate": (
        {"tracking_uri": f"http://bob:s3cret@127.0.0.1:{PORT}/"},
        [],
        f"http://bob:***@127.0.0.1:{PORT}",
    ),
}


@pytest.mark.parametrize("command", list(DOWN))
def test_a_tracking_server_that_does_not_answer_is_one_line_exit_2_and_nothing_is_created(
    command, tmp_path
):
    changes, options, shown = DOWN[command]
    path = _write(tmp_path, **changes)
    proc = _cli(tmp_path, command, path.name, *options)
    message = (
        f"MLflow tracking server {shown} does not answer (Connection refused); start it or "
        "change tracking_uri"
    )
    assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"], "nothing created"
