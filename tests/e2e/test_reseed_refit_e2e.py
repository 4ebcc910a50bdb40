"""Reseeds and refits with real Ray, Optuna storage and MLflow.

A reseed is an MLflow run of its own, never an Optuna trial: the study keeps exactly its
trials, the sampler's history stays the search's, and the time budget covers the reseeds. A
refit retrains the chosen members on training + validation data and never reads the test
split before reporting: two builds that differ only in their test split register the same
networks and differ only in their test scores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from searchsvc import keys
from searchsvc.api import load_ensemble
from searchsvc.ensemble.build import build_study_ensemble
from searchsvc.retraining import reseed_seed
from searchsvc.study.loader import load_study
from searchsvc.study_run import StudyRun
from tests.helpers import searchsvc_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STUDY = {
    "name": "reseed-refit",
    "trainer": "mlp",
    "dataset": {"name": "mnist", "val_size": 500, "train_subset": 1500},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "n_layers": 1,
        "width_1": {"type": "int", "low": 16, "high": 48},
        "batch_size": 64,
        "patience": 0,
        "diagnostics": False,
    },
    "sampler": {"name": "random"},
    "scheduler": {"name": "none"},
    "budget": {"n_trials": 4, "max_epochs": 3, "max_concurrent_trials": 2},
    "ensemble": {"size": 5, "candidates": 3, "reseed": 2, "refit": True},
    "seed": 5,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """The study file, run once with two reseeds and a refit."""
    folder = tmp_path_factory.mktemp("reseed")
    path = folder / "reseed.yaml"
    spec = {**STUDY, "dataset": {**STUDY["dataset"], "data_dir": str(data_dir)}}
    spec["workdir"] = str(folder / "work")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = searchsvc_cli(folder, "run", str(path), "--json", timeout=900)
    assert done.returncode == 0, done.stderr
    return path, json.loads(done.stdout), done.stderr


def _optuna(path: Path) -> optuna.Study:
    storage = f"sqlite:///{path.parent / 'work' / 'optuna.db'}"
    return optuna.load_study(study_name=STUDY["name"], storage=storage)


def _runs(path: Path) -> list:
    client = MlflowClient(f"sqlite:///{path.parent / 'work' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY["name"])
    return client.search_runs([experiment.experiment_id], max_results=100)


def _retrains(path: Path, kind: str) -> list:
    return [r for r in _runs(path) if r.data.tags.get(keys.TAG_RETRAIN) == kind]


def test_a_reseed_is_an_mlflow_run_of_its_own_and_never_an_optuna_trial(study) -> None:
    path, result, stderr = study
    trials = _optuna(path).trials
    assert [t.number for t in trials] == [0, 1, 2, 3], "the study holds its 4 trials only"
    assert result["finished"] == 4
    best_two = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: -t.values[0],
    )[:2]
    reseeds = _retrains(path, "reseed")
    by_trial = {int(r.data.tags[keys.TAG_RETRAIN_OF]): r for r in reseeds}
    assert sorted(by_trial) == sorted(t.number for t in best_two)
    for number, reseed in by_trial.items():
        assert keys.TAG_TRIAL not in reseed.data.tags, "nothing that counts trials sees it"
        assert reseed.info.status == "FINISHED"
        assert reseed.data.params["seed"] == str(reseed_seed(STUDY["seed"] + number, 1))
        assert reseed.data.tags[keys.TAG_PARENT] == result["parent_run_id"]
    trial_runs = [r for r in _runs(path) if keys.TAG_TRIAL in r.data.tags]
    assert len(trial_runs) == 4
    trial_params = {int(r.data.tags[keys.TAG_TRIAL]): r.data.params for r in trial_runs}
    for number, reseed in by_trial.items():  # the fixed params too (patience 0, 1 layer ...)
        assert {**reseed.data.params, "seed": ""} == {**trial_params[number], "seed": ""}
    assert result["reseeds"]["finished"] == 2
    assert sorted(result["ensemble"]["reseeds"]) == sorted(f"{n}-reseed-1" for n in by_trial)
    line = next(x for x in stderr.splitlines() if x.startswith("reseeds of trials"))
    assert line.startswith(f"reseeds of trials {[t.number for t in best_two]}: 2 finished in ")


def test_the_refit_retrains_every_member_and_the_best_single_for_their_best_epochs(
    study,
) -> None:
    path, result, _ = study
    summary = result["ensemble"]
    members = {
        f"{m['trial']}-reseed-{m['reseed']}" if m["reseed"] else str(m["trial"])
        for m in summary["members"]
    }
    assert set(summary["refit"]) == members | {str(summary["best_single_trial"])}
    assert summary["refit_failed"] == ""
    refits = _retrains(path, "refit")
    assert sorted(r.info.run_name for r in refits) == sorted(
        f"refit-{k}" for k in summary["refit"]
    )
    best_epoch = {str(t.number): t.user_attrs[keys.BEST_EPOCH] for t in _optuna(path).trials}
    for run in _retrains(path, "reseed"):
        key = f"{run.data.tags[keys.TAG_RETRAIN_OF]}-reseed-{run.data.tags[keys.TAG_RESEED]}"
        best_epoch[key] = int(run.data.tags[keys.trial_tag("best_epoch")])
    for run in refits:
        assert run.info.status == "FINISHED"
        member = run.info.run_name.removeprefix("refit-")
        assert int(run.data.tags[keys.trial_tag("epochs")]) == best_epoch[member]
        assert not any(name.startswith("val_") for name in run.data.metrics), "in-sample"
    for scores in ("best_single", "ensemble", "pre_refit_best_single", "pre_refit_ensemble"):
        assert 0.5 < summary[scores]["accuracy"] <= 1.0


def test_the_time_budget_covers_the_reseeds_and_finished_ones_are_kept(study) -> None:
    path, _, _ = study
    # The search is done: the budget starts with the reseeds and is gone before the first.
    sets = ["ensemble.reseed=3", "budget.time_budget_s=0.001", "ensemble.refit=false"]
    options = [part for item in sets for part in ("--set", item)]
    again = searchsvc_cli(path.parent, "run", str(path), *options, timeout=900)
    assert again.returncode == 0, again.stderr
    line = next(x for x in again.stderr.splitlines() if x.startswith("reseeds of trials"))
    assert ": 0 finished, 2 kept from an earlier run, 1 cut by the time budget in " in line
    assert len(_retrains(path, "reseed")) == 2, "a reseed that never started leaves no run"
    assert len(_optuna(path).trials) == 4


def test_the_refit_never_reads_the_test_split_before_reporting(study) -> None:
    path, _, _ = study
    spec = load_study(path)
    builds = []
    for scramble in (False, True):
        run = StudyRun.prepare(spec)
        run.open_existing()
        with run.lifecycle():
            data = run.load_data()
            if scramble:  # another test split: noise images, shuffled labels
                rng = np.random.default_rng(0)
                run.data = dataclasses.replace(
                    data, x_test=rng.uniform(0, 1, data.x_test.shape).astype(np.float32),
                    y_test=rng.permutation(data.y_test),
                )  # fmt: skip
            run.open_tracking(tidy=False)
            builds.append((build_study_ensemble(run), data.x_val[:200]))
    (real, x), (scrambled, _) = builds
    assert real.members == scrambled.members and real.refit == scrambled.refit
    assert real.val_nll == scrambled.val_nll
    uri = f"sqlite:///{path.parent / 'work' / 'mlflow.db'}"
    first = load_ensemble(f"models:/{STUDY['name']}/{real.version}", tracking_uri=uri)
    second = load_ensemble(f"models:/{STUDY['name']}/{scrambled.version}", tracking_uri=uri)
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))
    assert real.ensemble.accuracy > 0.5 > scrambled.ensemble.accuracy, "only the report moved"
