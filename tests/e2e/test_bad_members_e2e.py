"""A finished study whose stored models went bad: the ensemble is built from the rest.

Real Ray, Optuna storage and MLflow. Three trials' stored models are broken on disk, in MLflow's
own artifact store (a truncated ``state_dict.pt``, a deleted ``params.json``, weights that give
NaN probabilities); ``searchsvc ensemble`` and ``searchsvc run`` must both finish, name each
skipped trial, and build the ensemble from the other trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from searchsvc import keys
from searchsvc.search.claim import holder_of

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STUDY = {
    "name": "bad-members",
    "trainer": "mlp",
    "dataset": {"name": "mnist", "val_size": 500, "train_subset": 1000},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "n_layers": 1,
        "width_1": {"type": "int", "low": 16, "high": 48},
        "batch_size": 64,
    },
    "sampler": {"name": "random"},
    "scheduler": {"name": "none"},
    "budget": {"n_trials": 6, "max_epochs": 1, "max_concurrent_trials": 2},
    "ensemble": {"method": "greedy", "size": 3, "candidates": 6},
    "seed": 3,
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "searchsvc", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def broken(tmp_path_factory, data_dir):
    """The finished study, and the trials whose stored models were broken, by how."""
    folder = tmp_path_factory.mktemp("bad-members")
    study_file = folder / "bad.yaml"
    spec = {**STUDY, "dataset": {**STUDY["dataset"], "data_dir": str(data_dir)}}
    spec["workdir"] = str(folder / "work")
    study_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    first = _cli("run", str(study_file), "--no-ensemble")
    assert first.returncode == 0, first.stderr
    storage = f"sqlite:///{folder / 'work' / 'optuna.db'}"
    study = optuna.load_study(study_name="bad-members", storage=storage)
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6, "the random sampler with no scheduler completes every trial"
    client = MlflowClient(f"sqlite:///{folder / 'work' / 'mlflow.db'}")
    model = {n: _model_folder(client, n) for n in complete}
    truncated, no_params, nan, *_ = complete
    state = model[truncated] / "state_dict.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (model[no_params] / "params.json").unlink()
    weights = torch.load(model[nan] / "state_dict.pt", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in weights.items()}, model[nan] / "state_dict.pt")  # fmt: skip
    return study_file, client, study, {"truncated": truncated, "no_params": no_params, "nan": nan}


def _model_folder(client: MlflowClient, number: int) -> Path:
    (run,) = client.search_runs(
        client.get_experiment_by_name("bad-members").experiment_id,
        filter_string=f"tags.`{keys.TAG_TRIAL}` = '{number}'",
    )
    return Path(urlparse(run.info.artifact_uri).path) / "model"


def _assert_skipped_are_named(stdout: str, bad: dict[str, int]) -> None:
    """One ``skipped trial N: reason`` line per broken trial (in rank order), nothing else."""
    said = dict(
        line.removeprefix("skipped trial ").split(": ", 1)
        for line in stdout.splitlines()
        if line.startswith("skipped trial ")
    )
    expected = {
        # torch's own words depend on where the file was cut (OSError or RuntimeError).
        str(bad["truncated"]): "state_dict.pt unreadable: ",
        str(bad["no_params"]): "params.json unreadable: FileNotFoundError: [Errno 2] No such "
        "file or directory: ",
        str(bad["nan"]): "its validation probabilities are not finite",
    }
    assert sorted(said) == sorted(expected)
    for trial, reason in expected.items():
        assert said[trial].startswith(reason), (trial, said[trial])


def _assert_built_from_the_rest(client: MlflowClient, study, bad: dict[str, int]) -> None:
    parent = study.user_attrs[keys.PARENT_RUN]
    summary = client.download_artifacts(parent, "ensemble/summary.json")
    data = json.loads(Path(summary).read_text())
    members = {m["trial"] for m in data["members"]}
    assert members and not members & set(bad.values()), "no broken trial is a member"
    assert sorted(s["trial"] for s in data["skipped"]) == sorted(bad.values())
    assert client.get_run(parent).info.status == "FINISHED"


def test_ensemble_command_skips_the_broken_trials_and_builds_from_the_rest(broken):
    study_file, client, study, bad = broken
    proc = _cli("ensemble", str(study_file))
    assert proc.returncode == 0, proc.stderr
    _assert_skipped_are_named(proc.stdout, bad)
    _assert_built_from_the_rest(client, study, bad)


def test_running_the_finished_study_again_ends_it_with_the_report(broken):
    study_file, client, study, bad = broken
    proc = _cli("run", str(study_file))
    assert proc.returncode == 0, proc.stderr
    _assert_skipped_are_named(proc.stdout, bad)
    _assert_built_from_the_rest(client, study, bad)
    assert (study_file.parent / "work" / "report" / "index.html").is_file()
    storage = f"sqlite:///{study_file.parent / 'work' / 'optuna.db'}"
    assert holder_of(storage, "bad-members") is None, "the claim is released"
