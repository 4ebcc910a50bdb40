"""Every scheduler and the multi-objective sampler through real Ray, Optuna storage and MLflow
(no-op trainer: the machinery, not the training, is under test)."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study
from tests.helpers import base_study

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.mark.parametrize("scheduler", ["median", "hyperband"])
def test_scheduler_runs_the_budget_and_leaves_nothing_running(scheduler, write_study, tmp_path):
    study = base_study(
        name=f"sched-{scheduler}",
        scheduler={"name": scheduler},
        budget={"n_trials": 6, "max_epochs": 4, "max_concurrent_trials": 2},
        workdir=str(tmp_path / "w"),
    )
    study["ensemble"] = {"enabled": False}
    result = run_study(load_study(write_study(study)), console=Console(quiet=True))
    assert result.finished == 6 and result.failed == 0
    storage = optuna.load_study(study_name=f"sched-{scheduler}", storage=result.paths.storage_url)
    for trial in storage.trials:
        assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        # Every epoch the trial ran reached Optuna once, in order (paused trials resume).
        assert list(trial.intermediate_values) == list(range(1, trial.user_attrs["epochs"] + 1))
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs["reason"].startswith(f"stopped by {scheduler}")


def test_nsga2_multi_objective_study_records_both_values(write_study, tmp_path):
    study = base_study(
        name="pareto",
        objective=[{"metric": "val_loss", "mode": "min"}, {"metric": "train_loss", "mode": "max"}],
        sampler={"name": "nsga2", "population_size": 4},
        scheduler="none",
        budget={"n_trials": 6, "max_epochs": 2, "max_concurrent_trials": 2},
        workdir=str(tmp_path / "w"),
    )
    study["ensemble"] = {"enabled": False}
    result = run_study(load_study(write_study(study)), console=Console(quiet=True))
    assert result.complete == 6
    storage = optuna.load_study(study_name="pareto", storage=result.paths.storage_url)
    assert all(len(t.values) == 2 for t in storage.trials)
    assert storage.best_trials, "a Pareto front exists"
    client = MlflowClient(result.paths.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("pareto").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
    )
    assert len(runs) == 6
