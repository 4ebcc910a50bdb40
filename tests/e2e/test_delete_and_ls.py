"""``searchsvc ls`` and ``searchsvc delete`` on stores written directly with Optuna and MLflow
(no Ray): what is listed, what is deleted, and that nothing is deleted without --yes."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from searchsvc.cli import app
from searchsvc.inspect.listing import list_studies
from tests.helpers import base_study

pytestmark = [pytest.mark.slow]


def _made(tmp_path: Path) -> tuple[Path, str, str]:
    """A study file and its stores in runs/gone/: an Optuna study of 2 trials (1 complete),
    an MLflow experiment with a run and a registered model."""
    folder = tmp_path / "runs" / "gone"
    folder.mkdir(parents=True)
    storage, tracking = f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    study = optuna.create_study(study_name="gone", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=0.25, params={}, distributions={}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.create_run(client.create_experiment("gone"))
    client.create_registered_model("gone")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(base_study(name="gone", workdir=str(folder))))
    return path, storage, tracking


def _cli(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, result.stdout, result.stderr


def test_ls_json_lists_the_study_by_state_with_its_best_value(tmp_path: Path) -> None:
    _, storage, _ = _made(tmp_path)

    code, stdout, stderr = _cli("ls", "--runs-dir", str(tmp_path / "runs"), "--json")

    assert code == 0, stderr
    (listing,) = list_studies(tmp_path / "runs")
    assert json.loads(stdout) == [listing.to_dict()]
    assert (listing.name, listing.storage, listing.trials, listing.best_value) == (
        "gone", storage, {"COMPLETE": 1, "PRUNED": 1}, 0.25,
    )  # fmt: skip


def test_ls_of_a_missing_runs_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    code, _, stderr = _cli("ls", "--runs-dir", str(tmp_path / "nope"))

    assert (code, stderr) == (2, f"error: --runs-dir: {tmp_path / 'nope'} is not a folder\n")


def test_delete_without_yes_and_no_terminal_exits_2_deleting_nothing(tmp_path: Path) -> None:
    path, storage, tracking = _made(tmp_path)

    code, _, stderr = _cli("delete", str(path))

    assert code == 2
    assert (
        stderr == f"error: {path}: not deleting study 'gone' without --yes (no terminal to ask)\n"
    )
    assert optuna.get_all_study_names(storage) == ["gone"]
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert client.get_experiment_by_name("gone").lifecycle_stage == "active"
    assert [m.name for m in client.search_registered_models()] == ["gone"]


def test_delete_yes_removes_the_stores_and_the_folder(tmp_path: Path) -> None:
    path, storage, tracking = _made(tmp_path)
    code, stdout, stderr = _cli("delete", str(path), "--yes")

    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "deleted registered model 'gone'"
    assert lines[1].startswith("deleted MLflow experiment 'gone' (kept as deleted 'gone-deleted-")
    assert lines[2:] == [
        "deleted Optuna study 'gone'",
        f"deleted folder {tmp_path / 'runs' / 'gone'}",
    ]
    assert not (tmp_path / "runs" / "gone").exists()


def test_delete_on_shared_stores_frees_the_experiment_name(tmp_path: Path) -> None:
    path, storage, tracking = _made(tmp_path)
    shared = tmp_path / "shared.db"
    (tmp_path / "runs" / "gone" / "mlflow.db").rename(shared)
    tracking = f"sqlite:///{shared}"

    code, _, stderr = _cli("delete", str(path), "--tracking-uri", tracking, "--yes")

    assert code == 0, stderr
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert client.get_experiment_by_name("gone") is None
    assert client.search_registered_models() == []
    client.create_experiment("gone")  # a later study of the same name gets a fresh experiment
