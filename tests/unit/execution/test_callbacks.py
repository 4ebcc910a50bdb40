"""The Tune callbacks, driven in-process with Ray's own ``Trial`` objects (no cluster) in the
order Tune calls them, against a real Optuna study and a real MLflow store (SQLite)."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.train import Checkpoint
from ray.tune.experiment import Trial
from rich.console import Console

from searchsvc import keys
from searchsvc.execution.callbacks import ProgressCallback, TrackingCallback
from searchsvc.execution.trainable import CHECKPOINT_BEST
from searchsvc.search.searcher import OptunaSearcher
from searchsvc.study.spec import StudySpec
from searchsvc.tracking import StudyTracker
from tests.helpers import base_study


@pytest.fixture
def wired(tmp_path: Path):
    spec = StudySpec.model_validate(
        base_study(name="cb", seed=5, scheduler="none", budget={"n_trials": 2, "max_epochs": 2})
    )
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="cb")
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.start_study(spec, "name: cb\n")
    searcher = OptunaSearcher(spec, study, set())
    tracking = TrackingCallback(tracker, searcher, trainer_ref="noop", n_features=20, n_classes=10)
    out = io.StringIO()
    progress = ProgressCallback(
        spec, searcher, done_before=0, to_run=2, console=Console(file=out, width=200),
        best_before=None,
    )  # fmt: skip
    return spec, searcher, tracker, tracking, progress, out


def _trial(searcher: OptunaSearcher, trial_id: str) -> Trial:
    return Trial("noop", config=searcher.suggest(trial_id), trial_id=trial_id, stub=True)


def _result(epoch: int, val_loss: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_loss": val_loss, "best_epoch": epoch,
            "node_ip": "127.0.0.1", "node_id": "n1", "time_this_iter_s": 0.1}  # fmt: skip


def test_a_completed_and_a_failed_trial_reach_mlflow_and_the_progress_line(wired) -> None:
    spec, searcher, tracker, tracking, progress, out = wired
    good, bad = _trial(searcher, "t1"), _trial(searcher, "t2")
    for trial in (good, bad):
        tracking.on_trial_start(iteration=0, trials=[good, bad], trial=trial)
    for epoch, loss in ((1, 0.9), (2, 0.7)):  # Tune notifies the searcher first
        searcher.on_trial_result("t1", _result(epoch, loss))
        tracking.on_trial_result(iteration=epoch, trials=[good], trial=good,
                                 result=_result(epoch, loss))  # fmt: skip
    searcher.on_trial_complete("t1", _result(2, 0.7))
    tracking.on_trial_complete(iteration=3, trials=[good], trial=good)
    progress.on_trial_complete(iteration=3, trials=[good], trial=good)
    searcher.on_trial_complete("t2", None, error=True)
    tracking.on_trial_error(iteration=4, trials=[bad], trial=bad)
    progress.on_trial_error(iteration=4, trials=[bad], trial=bad)

    client = MlflowClient(tracker.tracking_uri)
    found = client.search_runs([tracker.experiment_id])
    runs = {int(r.data.tags[keys.TAG_TRIAL]): r for r in found if keys.TAG_TRIAL in r.data.tags}
    assert sorted(runs) == [0, 1]
    done, failed = runs[0], runs[1]
    assert (done.info.status, done.data.tags[keys.TAG_STATE]) == ("FINISHED", "COMPLETE")
    assert done.data.params["seed"] == str(spec.seed + 0)  # the searcher's seed rule
    assert done.data.tags[keys.trial_tag("node_ip")] == "127.0.0.1"
    history = client.get_metric_history(done.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7)]
    assert "time_this_iter_s" not in done.data.metrics  # Ray's bookkeeping stays out
    assert (failed.info.status, failed.data.tags[keys.TAG_STATE]) == ("FAILED", "FAILED")
    assert failed.data.tags[keys.TAG_REASON] == "error: unknown error (see the Ray logs)"
    assert failed.data.params["seed"] == str(spec.seed + 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # off a terminal: one line per finished trial, nothing else
    assert (
        "complete 1  pruned 0  failed 0" in lines[0] and "best val_loss=0.7 (trial 0)" in lines[0]
    )
    assert "trials 2/2  complete 1  pruned 0  failed 1" in lines[-1]


class _CountingTracker(StudyTracker):
    """The real tracker, noting the Optuna state of the trial each time it uploads a model."""

    def __init__(self, uri: str, study: optuna.Study) -> None:
        super().__init__(uri)
        self.study, self.uploads = study, []

    def log_model(self, run_id, state_file, info) -> None:
        self.uploads.append(self.study.trials[info["trial_number"]].state)
        super().log_model(run_id, state_file, info)


def test_weights_go_up_once_before_optuna_is_told_complete_or_the_trial_says_why_not(
    wired, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec, searcher, _, _, _, _ = wired
    tracker = _CountingTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", searcher._study)
    tracker.start_study(spec, "name: cb\n")
    tracking = TrackingCallback(tracker, searcher, trainer_ref="mlp", n_features=4,
                                n_classes=3, has_weights=True)  # fmt: skip
    saved, bare = _trial(searcher, "t1"), _trial(searcher, "t2")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"weight": torch.zeros(3, 4)}, folder / CHECKPOINT_BEST)
    for trial in (saved, bare):
        tracking.on_trial_start(iteration=0, trials=[saved, bare], trial=trial)
        searcher.on_trial_result(trial.trial_id, _result(1, 0.5))
    tracking.on_checkpoint(iteration=1, trials=[saved], trial=saved,
                           checkpoint=Checkpoint.from_directory(str(folder)))  # fmt: skip
    for trial in (saved, bare):  # Tune notifies the searcher, then the callbacks
        searcher.on_trial_complete(trial.trial_id, _result(2, 0.4))
        tracking.on_trial_complete(iteration=2, trials=[trial], trial=trial)

    assert tracker.uploads == [optuna.trial.TrialState.RUNNING], "once, before the tell"
    first, second = searcher._study.trials
    assert [first.state, second.state] == [optuna.trial.TrialState.COMPLETE] * 2
    missing = "missing: the trial left no checkpoint"
    assert [first.user_attrs[keys.WEIGHTS], second.user_attrs[keys.WEIGHTS]] == ["stored", missing]
    client = MlflowClient(tracker.tracking_uri)
    (run,) = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`{keys.TAG_TRIAL}` = '0'"
    )
    assert sorted(f.path for f in client.list_artifacts(run.info.run_id, "model")) == [
        "model/params.json", "model/state_dict.pt",
    ]  # fmt: skip
    warning = "trial 1: its weights are not stored (the trial left no checkpoint); no ensemble "
    assert f"{warning}will use it" in caplog.messages


def test_a_trainer_without_weights_gets_no_weights_attribute(wired) -> None:
    spec, searcher, tracker, tracking, _, _ = wired  # the noop trainer: has_weights = False
    trial = _trial(searcher, "t1")
    tracking.on_trial_start(iteration=0, trials=[trial], trial=trial)
    searcher.on_trial_result("t1", _result(1, 0.5))
    searcher.on_trial_complete("t1", _result(2, 0.4))
    (done,) = searcher._study.trials
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert keys.WEIGHTS not in done.user_attrs


def test_a_newer_checkpoint_replaces_the_trials_previous_one_on_disk(wired, tmp_path: Path):
    _, searcher, _, tracking, _, _ = wired
    trial = _trial(searcher, "t1")
    tracking.on_trial_start(iteration=0, trials=[trial], trial=trial)
    folders = [tmp_path / f"checkpoint_00000{epoch}" for epoch in (1, 2, 3)]
    for epoch, folder in enumerate(folders, start=1):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"x")
        searcher.on_trial_result("t1", _result(epoch, 1.0 / epoch))
        checkpoint = Checkpoint.from_directory(str(folder))
        tracking.on_checkpoint(iteration=epoch, trials=[trial], trial=trial, checkpoint=checkpoint)
    assert [f.exists() for f in folders] == [False, False, True]
    record = searcher._study.trials[0].user_attrs[keys.CHECKPOINT]
    assert (record["path"], record["epoch"]) == (str(folders[-1]), 3)
