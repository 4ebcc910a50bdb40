"""``searchsvc validate --json``: the validated spec as one JSON document, or the error lines on
stderr with nothing on stdout."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from searchsvc.cli import app
from searchsvc.study.loader import load_study
from tests.helpers import base_study


def _cli(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, result.stdout, result.stderr


def test_validate_json_is_the_validated_spec(write_study) -> None:
    path = write_study(base_study())

    code, stdout, stderr = _cli("validate", str(path), "--json")

    assert (code, stderr) == (0, "")
    expected = load_study(path).spec.model_dump(mode="json")
    assert json.loads(stdout) == {"study": str(path), "valid": True, "spec": expected}
    assert expected["sampler"]["n_startup_trials"] == 10  # defaults filled in, not the file


def test_validate_json_applies_the_set_overrides(write_study) -> None:
    path = write_study(base_study())

    code, stdout, _ = _cli("validate", str(path), "--json", "--set", "budget.n_trials=7")

    assert code == 0
    assert json.loads(stdout)["spec"]["budget"]["n_trials"] == 7


def test_validate_json_on_a_bad_file_prints_only_the_error_line(write_study) -> None:
    path = write_study(base_study(sampler={"name": "tpee"}))

    code, stdout, stderr = _cli("validate", str(path), "--json")

    assert (code, stdout) == (2, "")
    assert stderr == (
        f"error: {path}: sampler: unknown name 'tpee' (did you mean 'tpe'?); expected one of: "
        "tpe, random, gp, qmc, cmaes, grid, nsga2\n"
    )
