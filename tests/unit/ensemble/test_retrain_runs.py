"""Reseeds and refits in MLflow (a real SQLite store): their runs, tags and weights, and the
reseeds the ensemble reads back, exactly those planned."""

from __future__ import annotations

import math

import pytest
import torch

from searchsvc import keys
from searchsvc.ensemble.retrain_runs import log_retrain_run, reseed_sources
from searchsvc.retraining import RetrainJob, RetrainResult
from searchsvc.study.spec import StudySpec
from searchsvc.tracking import StudyTracker
from tests.helpers import base_study

SHAPE = {"n_features": 4, "n_classes": 3}
SPEC = StudySpec.model_validate(base_study(objective={"metric": "val_loss", "mode": "min"}))


@pytest.fixture
def tracker(tmp_path) -> StudyTracker:
    writer = StudyTracker(
        f"sqlite:///{tmp_path}/mlflow.db", artifact_location=(tmp_path / "art").as_uri()
    )
    writer.start_study(SPEC, "name: unit-study\n")
    return writer


def _result(kind: str, source: int, index: int, status: str = "finished") -> RetrainResult:
    job = RetrainJob(
        kind, source, index, {"lr": 0.1}, seed=7, epochs=2 if kind == "refit" else None
    )  # type: ignore[arg-type]
    history = [{"epoch": 1.0, "val_loss": 0.5, "train_loss": 0.6},
               {"epoch": 2.0, "val_loss": 0.4, "train_loss": math.nan}]  # fmt: skip
    state = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
    return RetrainResult(job, status, "", history, best_epoch=2, best_state=state, seconds=1.5)  # type: ignore[arg-type]


def _run(tracker: StudyTracker, run_id: str):
    return tracker.client.get_run(tracker.resolve_run(run_id))


def test_a_finished_reseed_is_a_child_run_with_its_weights_and_no_trial_number(tracker) -> None:
    run = _run(tracker, log_retrain_run(tracker, SPEC, _result("reseed", 4, 1), SHAPE))
    tags = run.data.tags
    assert (run.info.run_name, run.info.status) == ("reseed-0004-1", "FINISHED")
    assert keys.TAG_TRIAL not in tags
    assert (tags[keys.TAG_RETRAIN], tags[keys.TAG_RETRAIN_OF], tags[keys.TAG_RESEED]) == (
        "reseed",
        "4",
        "1",
    )
    assert (tags[keys.TAG_PARENT], tags["searchsvc.value"]) == (tracker.parent_run_id, "0.4")
    assert run.data.params == {"lr": "0.1", "seed": "7"}
    assert run.data.metrics == {"val_loss": 0.4, "train_loss": 0.6}  # the latest finite ones
    stored = {a.path for a in tracker.client.list_artifacts(run.info.run_id, "model")}
    assert stored == {"model/params.json", "model/state_dict.pt"}


def test_a_refit_keeps_no_in_sample_validation_metrics_and_no_weights_in_mlflow(tracker) -> None:
    run = _run(tracker, log_retrain_run(tracker, SPEC, _result("refit", 4, 0), SHAPE))
    assert (run.info.run_name, run.data.tags[keys.TAG_RETRAIN]) == ("refit-4", "refit")
    assert run.data.metrics == {"train_loss": 0.6}
    assert tracker.client.list_artifacts(run.info.run_id) == []


def test_a_reseed_that_never_started_leaves_no_run(tracker) -> None:
    assert log_retrain_run(tracker, SPEC, _result("reseed", 4, 1, "not_started"), SHAPE) is None


def test_the_reseeds_read_back_are_the_finished_ones_planned_in_the_plans_order(tracker) -> None:
    for source, index, status in [(0, 1, "finished"), (0, 2, "finished"), (1, 1, "finished"),
                                  (2, 1, "out_of_time")]:  # fmt: skip
        log_retrain_run(tracker, SPEC, _result("reseed", source, index, status), SHAPE)
    found = reseed_sources(tracker, [(1, 1), (0, 1), (2, 1), (3, 1)])
    assert [(s.number, s.reseed, s.value) for s in found] == [(1, 1, 0.4), (0, 1, 0.4)]
