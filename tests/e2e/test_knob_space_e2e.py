"""Every knob of the MLP trainer searched through the service: the search space reaches the
trainer through Optuna and Ray, every trial ends COMPLETE or PRUNED (never FAIL), and each
knob is a param of its MLflow run. Each knob's correctness is in tests/test_mlp_knobs.py."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study
from tests.helpers import base_study
from trainers.mlp.params import ACTIVATIONS, INITS, LR_SCHEDULES, NORMS, OPTIMIZERS

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

KNOBS = {
    "n_layers": {"type": "int", "low": 1, "high": 3},
    "width_1": {"type": "int", "low": 16, "high": 64, "log": True},
    "width_2": {"type": "int", "low": 16, "high": 64, "when": "n_layers >= 2"},
    "width_3": {"type": "int", "low": 16, "high": 64, "when": "n_layers >= 3"},
    "activation": {"type": "categorical", "choices": list(ACTIVATIONS)},
    "leaky_slope": {"type": "float", "low": 0.01, "high": 0.3, "when": "activation == leaky_relu"},
    "maxout_pieces": {"type": "int", "low": 2, "high": 4, "when": "activation == maxout"},
    # RBM pre-training has its own tests (and does not pair with maxout).
    "init": {"type": "categorical", "choices": [i for i in INITS if i != "rbm"]},
    "init_std": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": "init == normal"},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "input_dropout": {"type": "float", "low": 0.0, "high": 0.2},
    "norm": {"type": "categorical", "choices": list(NORMS)},
    "optimizer": {"type": "categorical", "choices": list(OPTIMIZERS)},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-8, "high": 1e-3, "log": True},
    "l1": {"type": "float", "low": 1e-8, "high": 1e-4, "log": True},
    "clip_norm": {"type": "float", "low": 0.5, "high": 5.0},
    "max_norm": {"type": "float", "low": 1.0, "high": 4.0},
    "lr_schedule": {"type": "categorical", "choices": list(LR_SCHEDULES)},
    "lr_step_size": 1,
    "lr_gamma": 0.5,
    "batch_size": {"type": "categorical", "choices": [32, 64]},
    "patience": 1,
}


def test_every_knob_is_searchable_through_the_service(write_study, tmp_path, data_dir):
    study = base_study(
        name="all-knobs",
        trainer="mlp",
        dataset="digits",
        objective={"metric": "val_accuracy", "mode": "max"},
        search_space=KNOBS,
        sampler={"name": "random"},
        scheduler="none",
        budget={"n_trials": 8, "max_epochs": 2, "max_concurrent_trials": 2},
        workdir=str(tmp_path / "w"),
    )
    study["ensemble"] = {"enabled": False}
    result = run_study(load_study(write_study(study)), console=Console(quiet=True))
    assert result.finished == 8 and result.failed == 0
    trials = optuna.load_study(study_name="all-knobs", storage=result.paths.storage_url).trials
    assert all(t.state != optuna.trial.TrialState.FAIL for t in trials)
    client = MlflowClient(result.paths.tracking_uri)
    experiment = client.get_experiment_by_name("all-knobs")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`searchsvc.trial_number` != ''"
    )
    assert len(runs) == 8
    unconditional = {k for k, v in KNOBS.items() if not (isinstance(v, dict) and "when" in v)}
    for run in runs:
        assert unconditional <= set(run.data.params), sorted(unconditional - set(run.data.params))
        assert "val_accuracy" in run.data.metrics
