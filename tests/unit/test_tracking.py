"""The MLflow writer: which failures are an outage (deferred, retried) and which are refusals
(logged, the study goes on), and the state tags a trial's run ends with."""

from __future__ import annotations

import json
import logging

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from searchsvc import deferred, keys
from searchsvc.journal import Journal
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


def _server(tracker, monkeypatch, error=None):
    """The tracker's log_batch answering ``error`` while ``state["down"]``; the tags it took."""
    state = {"down": True, "taken": []}
    real = tracker.client.log_batch

    def log_batch(run_id, metrics=(), params=(), tags=()):
        if state["down"]:
            raise error or RestException(
                {"error_code": "INTERNAL_ERROR", "message": "db restarting"}
            )
        state["taken"] += [t.value for t in tags]
        return real(run_id, metrics=metrics, params=params, tags=tags)

    monkeypatch.setattr(tracker.client, "log_batch", log_batch)
    return state


def test_writes_during_a_server_error_are_kept_in_order_and_written_later(tracker, monkeypatch):
    monkeypatch.setattr(deferred, "_RETRY_EVERY_S", 0.0)
    server = _server(tracker, monkeypatch)
    for n in range(3):
        tracker.set_study_tags({"n": str(n)})
    assert tracker.pending == 3 and server["taken"] == []
    server["down"] = False
    assert tracker.flush(wait_s=5) is True
    assert server["taken"] == ["0", "1", "2"] and tracker.lost_writes == 0


def test_deferred_writes_are_journaled_and_a_new_tracker_writes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(deferred, "_RETRY_EVERY_S", 0.0)
    spec = StudySpec.model_validate(base_study())
    uri, art = f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri()
    first = StudyTracker(uri, artifact_location=art)
    first.start_study(spec, "name: unit-study\n")
    first.use_journal(tmp_path / "journal")
    _server(first, monkeypatch)
    run_id = first.start_trial(0, {"lr": 0.01}, {})  # deferred: a placeholder
    first.log_epoch(run_id, {"val_loss": 0.5}, step=1)
    lines = (tmp_path / "journal" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line).get("op") for line in lines] == ["create_trial_run", "log_batch"]
    # The first driver dies here; the next one finds the journal and writes it, in order.
    second = StudyTracker(uri, artifact_location=art)
    second.start_study(spec, "name: unit-study\n")
    assert second.use_journal(tmp_path / "journal") == 2
    assert second.flush(wait_s=5) is True
    assert not (tmp_path / "journal").exists()
    runs = second.trial_run_records()
    history = second.client.get_metric_history(runs[0].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]
    # Replayed twice (a crash before the "done" line): still one run, one epoch.
    again = StudyTracker(uri, artifact_location=art)
    again.start_study(spec, "name: unit-study\n")
    journal = Journal(tmp_path / "journal")
    for line in lines:
        journal.append({k: v for k, v in json.loads(line).items() if k != "seq"})
    assert again.use_journal(tmp_path / "journal") == 2 and again.flush(wait_s=5)
    runs = again.client.search_runs([again.experiment_id], "tags.`searchsvc.trial_number` = '0'")
    assert len(runs) == 1
    assert len(again.client.get_metric_history(runs[0].info.run_id, "val_loss")) == 1


def test_a_refused_write_is_logged_and_the_study_goes_on(tracker, caplog, monkeypatch):
    refusal = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad value"})
    _server(tracker, monkeypatch, error=refusal)
    with caplog.at_level(logging.ERROR, logger="searchsvc.deferred"):
        tracker.log_epoch(tracker.parent_run_id, {"val_loss": 1.0}, step=3)  # must not raise
    assert tracker.lost_writes == 1 and tracker.pending == 0
    assert (
        "MLflow refused epoch 3 metrics; it is not recorded: INVALID_PARAMETER_VALUE: bad value"
        in caplog.text
    )


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


def test_reseed_and_refit_runs_never_fill_the_window_of_the_newest_trial_runs(tracker):
    tracker.start_trial(0, {"lr": 0.1}, tags={})
    for k in range(1, 13):  # newer than the trial's run, and more than the window holds
        tags = {keys.TAG_RETRAIN: "reseed", keys.TAG_RETRAIN_OF: "0", keys.TAG_RESEED: str(k)}
        tracker.create_child_run(f"reseed-0000-{k}", {"lr": 0.1}, tags, what="a reseed")
    newest = tracker.newest_trial_runs(3)
    assert list(newest) == [0]
    assert newest[0].info.run_name == "trial-0000"
