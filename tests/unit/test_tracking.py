"""The MLflow writer: which failures are an outage (deferred, retried) and which are refusals
(logged, the study goes on), and the state tags a trial's run ends with."""

from __future__ import annotations

import logging

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from searchsvc import deferred, keys
from searchsvc.study.spec import StudySpec
from searchsvc.tracking import StudyTracker
from tests.helpers import base_study


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("Connection refused"),
        RestException({"error_code": "INTERNAL_ERROR", "message": "db restarting"}),
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}),
        MlflowException("API request to endpoint /x failed with error code 503 != 200."),
    ],
    ids=["refused", "500-json", "503-json", "503-text"],
)
def test_an_outage_or_server_error_is_deferred(error):
    assert deferred.unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric 503"}),
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run 502"}),
        ValueError("value 5030 too large"),
    ],
    ids=["400", "404", "other"],
)
def test_a_refused_request_is_not_mistaken_for_an_outage(error):
    assert not deferred.unreachable(error)


@pytest.fixture
def tracker(tmp_path) -> StudyTracker:
    spec = StudySpec.model_validate(base_study())
    writer = StudyTracker(
        f"sqlite:///{tmp_path}/mlflow.db", artifact_location=(tmp_path / "art").as_uri()
    )
    writer.start_study(spec, "name: unit-study\n")
    return writer


def test_writes_during_a_server_error_are_kept_in_order_and_written_later(tracker, monkeypatch):
    monkeypatch.setattr(deferred, "_RETRY_EVERY_S", 0.0)
    written: list[int] = []
    down = {"on": True}

    def write(n: int) -> None:
        if down["on"]:
            raise RestException({"error_code": "INTERNAL_ERROR", "message": "db restarting"})
        written.append(n)

    for n in range(3):
        tracker._write(lambda n=n: write(n), f"write {n}")
    assert tracker.pending == 3 and written == []
    down["on"] = False
    tracker.flush(wait_s=5)
    assert written == [0, 1, 2] and tracker.lost_writes == 0


def test_a_refused_write_is_logged_and_the_study_goes_on(tracker, caplog):
    def refused() -> None:
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad value"})

    with caplog.at_level(logging.ERROR, logger="searchsvc.tracking"):
        tracker._write(refused, "epoch 3 metrics")  # must not raise
    assert tracker.lost_writes == 1 and tracker.pending == 0
    assert "MLflow refused epoch 3 metrics" in caplog.text


@pytest.mark.parametrize(("state", "tag", "status"), [
    ("COMPLETE", "COMPLETE", "FINISHED"),
    ("PRUNED", "PRUNED", "KILLED"),
    ("FAIL", "FAILED", "FAILED"),
])  # fmt: skip
def test_a_trials_run_ends_with_its_state_tag_and_mlflow_status(tracker, state, tag, status):
    run_id = tracker.start_trial(0, {"lr": 0.01}, {})
    tracker.end_trial(run_id, TrialState[state], "why", {"epochs": 1})
    run = MlflowClient(tracker.tracking_uri).get_run(run_id)
    assert run.data.tags[keys.TAG_STATE] == tag and run.info.status == status


def test_an_experiment_made_before_the_kind_tag_gets_it_when_the_study_runs_again(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("unit-study")  # as an older searchsvc left it
    spec = StudySpec.model_validate(base_study())
    StudyTracker(uri, artifact_location=(tmp_path / "art").as_uri()).start_study(spec, "x: 1\n")
    tags = client.get_experiment(experiment_id).tags
    assert tags[keys.TAG_EXPERIMENT_KIND] == "custom_model_development"
