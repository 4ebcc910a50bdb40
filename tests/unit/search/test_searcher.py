"""The Optuna searcher, driven by hand as Tune drives it: outcomes reach Optuna correctly."""

from __future__ import annotations

import optuna
import pytest

from searchsvc.search.searcher import OptunaSearcher
from searchsvc.search.trial_config import TrialTicket, params_of, ticket_of
from searchsvc.study.spec import StudySpec
from tests.helpers import base_study

State = optuna.trial.TrialState


@pytest.fixture
def setup(tmp_path):
    spec = StudySpec.model_validate(base_study(budget={"n_trials": 4, "max_epochs": 5}))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")
    stopped: set[str] = set()
    return spec, study, stopped, OptunaSearcher(spec, study, stopped)


def _result(epoch: int, val_loss: float, **extra) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_loss": val_loss, **extra}


def test_trial_stopped_by_the_scheduler_is_pruned_with_every_epoch_reported(setup):
    spec, study, stopped, searcher = setup
    config = searcher.suggest("t1")
    assert ticket_of(config) == TrialTicket(number=0, seed=spec.seed)
    assert set(params_of(config)) <= set(spec.search_space)  # the trainer sees params only
    searcher.on_trial_result("t1", _result(1, 0.9))
    stopped.add("t1")  # the scheduler said STOP on the epoch-2 result: Tune skips on_trial_result
    searcher.on_trial_complete("t1", _result(2, 0.8))
    (trial,) = study.get_trials()
    assert trial.state == State.PRUNED
    assert trial.intermediate_values == {1: 0.9, 2: 0.8}
    assert trial.user_attrs["reason"] == "stopped by asha at epoch 2"


def test_completed_trial_is_told_the_value_of_its_best_epoch(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.8, 0.85], start=1):
        searcher.on_trial_result("t1", _result(epoch, loss, best_epoch=2))
    searcher.on_trial_complete("t1", _result(5, 0.85, best_epoch=2))
    (trial,) = study.get_trials()
    assert trial.state == State.COMPLETE
    assert trial.value == 0.5  # the epoch whose weights are kept, not the last one
    assert searcher.outcomes["t1"].best_epoch == 2


def test_stop_at_the_last_epoch_is_not_pruning(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    for epoch in range(1, 5):
        searcher.on_trial_result("t1", _result(epoch, 1.0 / epoch, best_epoch=epoch))
    stopped.add("t1")
    searcher.on_trial_complete("t1", _result(5, 0.2, best_epoch=5))
    assert study.get_trials()[0].state == State.COMPLETE


def test_error_is_recorded_as_fail(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    searcher.on_trial_result("t1", _result(1, 0.9))
    searcher.on_trial_complete("t1", None, error=True)
    assert study.get_trials()[0].state == State.FAIL


def test_divergence_is_pruned_with_its_reason(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    searcher.on_trial_result("t1", _result(1, 2.0))
    searcher.on_trial_complete("t1", _result(2, float("nan"), diverged=1.0))
    (trial,) = study.get_trials()
    assert trial.state == State.PRUNED
    assert trial.user_attrs["reason"] == "diverged at epoch 2"
    assert trial.user_attrs["diverged"] is True


def test_non_finite_objective_of_a_finished_trial_is_fail_not_stuck_running(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", _result(5, float("nan")))
    assert study.get_trials()[0].state == State.FAIL


@pytest.mark.parametrize(("threshold", "label"), [(None, "underfit"), (0.85, "healthy")])
def test_diagnosis_uses_the_study_files_thresholds(tmp_path, threshold, label):
    overrides = {"budget": {"n_trials": 1, "max_epochs": 3}}
    if threshold is not None:
        overrides["diagnosis"] = {"underfit_train_accuracy": threshold}
    spec = StudySpec.model_validate(base_study(**overrides))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")
    searcher = OptunaSearcher(spec, study, set())
    searcher.suggest("t1")
    for epoch, (loss, acc) in enumerate([(0.6, 0.80), (0.45, 0.86), (0.4, 0.88)], start=1):
        searcher.on_trial_result(
            "t1",
            _result(epoch, loss + 0.02, train_loss=loss, train_accuracy=acc, best_epoch=epoch),
        )
    searcher.on_trial_complete("t1", _result(3, 0.42, train_loss=0.4, train_accuracy=0.88))
    assert study.get_trials()[0].user_attrs["diagnosis"] == label


def test_trial_stopped_while_paused_is_pruned_although_tune_passes_no_result(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    searcher.on_trial_result("t1", _result(1, 0.9))
    searcher.on_trial_result("t1", _result(2, 0.8))
    stopped.add("t1")  # HyperBand's halving loser, stopped through the controller while paused
    searcher.on_trial_complete("t1")
    (trial,) = study.get_trials()
    assert trial.state == State.PRUNED
    assert trial.intermediate_values == {1: 0.9, 2: 0.8}
    assert trial.user_attrs["reason"] == "stopped by asha at epoch 2"


def test_trial_that_never_reported_is_a_failure(setup):
    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    searcher.on_trial_complete("t1")
    (trial,) = study.get_trials()
    assert trial.state == State.FAIL
    assert trial.user_attrs["reason"] == "ended without reporting"


def test_a_trial_interrupted_by_a_dead_driver_resumes_from_its_checkpoint(setup, tmp_path):
    from searchsvc.search.storage import recover_interrupted, resumed_trials

    spec, study, stopped, searcher = setup
    searcher.suggest("t1")
    for epoch in (1, 2, 3):
        searcher.on_trial_result(
            "t1", _result(epoch, 1.0 / epoch, train_loss=2.0 / epoch, best_epoch=epoch)
        )
    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    searcher.note_checkpoint("t1", str(checkpoint), 2)  # epoch 3 ran, its checkpoint was lost
    # The driver dies here. A new one recovers the orphan and asks for it again.
    assert recover_interrupted(study) == [0]
    assert resumed_trials(study) == {0: 1}
    second = OptunaSearcher(spec, study, set())
    config = second.suggest("t2")
    # The seed stays the first trial's: one seed rule across a resume.
    assert ticket_of(config) == TrialTicket(
        number=1, seed=spec.seed + 0, resume_checkpoint=str(checkpoint), resume_of=0, replaces=0
    )
    assert study.trials[1].intermediate_values == {}, "nothing carried before the worker says"
    # The worker confirms it continued after epoch 2: those epochs count as the successor's.
    second.on_trial_result("t2", _result(3, 0.25, resumed_after=2))
    assert study.trials[1].intermediate_values == {1: 1.0, 2: 0.5, 3: 0.25}
    assert "restarted" not in study.trials[1].user_attrs and not second.restarted
    assert study.trials[0].state == State.FAIL and study.trials[0].user_attrs["interrupted"]


def _interrupt_after_checkpoint(spec, study, searcher, tmp_path):
    """Trial 0 runs 3 epochs, checkpoints after epoch 2, and its driver dies."""
    from searchsvc.search.storage import recover_interrupted

    searcher.suggest("t1")
    for epoch in (1, 2, 3):
        searcher.on_trial_result("t1", _result(epoch, 1.0 / epoch, best_epoch=epoch))
    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    searcher.note_checkpoint("t1", str(checkpoint), 2)
    assert recover_interrupted(study) == [0]
    return checkpoint


def test_a_successor_that_starts_again_from_epoch_1_is_a_restart_with_its_own_values(
    setup, tmp_path
):
    spec, study, stopped, searcher = setup
    _interrupt_after_checkpoint(spec, study, searcher, tmp_path)
    second = OptunaSearcher(spec, study, set())
    second.suggest("t2")
    second.on_trial_result("t2", _result(1, 0.8, resumed_after=0))  # not from the checkpoint
    second.on_trial_result("t2", _result(2, 0.7, resumed_after=0))
    assert study.trials[1].intermediate_values == {1: 0.8, 2: 0.7}, "its own values only"
    assert study.trials[1].user_attrs["restarted"] is True
    assert second.restarted == {"t2"}


def test_a_successor_killed_before_its_first_checkpoint_hands_on_the_owners_checkpoint(
    setup, tmp_path
):
    from searchsvc.search.storage import recover_interrupted

    spec, study, stopped, searcher = setup
    checkpoint = _interrupt_after_checkpoint(spec, study, searcher, tmp_path)
    OptunaSearcher(spec, study, set()).suggest("t2")  # trial 1; killed before any result
    assert recover_interrupted(study) == [1]
    third = OptunaSearcher(spec, study, set())
    config = third.suggest("t3")
    # The checkpoint is still trial 0's: the worker's owner check must look for trial 0; the
    # trial it replaces is trial 1.
    assert ticket_of(config) == TrialTicket(
        number=2, seed=spec.seed + 0, resume_checkpoint=str(checkpoint), resume_of=0, replaces=1
    )
    third.on_trial_result("t3", _result(3, 0.25, resumed_after=2))
    assert study.trials[2].intermediate_values == {1: 1.0, 2: 0.5, 3: 0.25}
    assert not third.restarted


def test_once_the_time_budget_runs_out_no_trial_starts_and_a_stopped_one_is_pruned(setup):
    from ray.tune.search import Searcher

    from searchsvc.search.budget import TimeBudget

    spec, study, stopped, _ = setup
    budget = TimeBudget(0.0)
    searcher = OptunaSearcher(spec, study, stopped, budget)
    searcher.suggest("t1")  # before the budget starts counting
    searcher.on_trial_result("t1", _result(1, 0.9))
    searcher.on_trial_result("t1", _result(2, 0.8))
    budget.start()
    assert searcher.suggest("t2") == Searcher.FINISHED
    assert len(study.trials) == 1, "no trial asked of Optuna that would not run"
    budget.stopped.add("t1")  # the stopper ended it after its epoch-2 result
    searcher.on_trial_complete("t1", _result(2, 0.8))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["reason"] == "stopped by the time budget at epoch 2"
    assert trial.intermediate_values == {1: 0.9, 2: 0.8}
