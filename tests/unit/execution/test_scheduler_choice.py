"""The schedulers choose the next trial to run among the live trials only (first pending, else
first paused, in the order they were asked for), never by reading every trial of the study."""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial

from searchsvc.execution.schedulers import build_scheduler
from searchsvc.search.trial_config import TrialTicket, make_config
from searchsvc.study.spec import StudySpec
from tests.helpers import base_study


class _Controller:
    def __init__(self, trials: list[Trial]) -> None:
        self._live = set(trials)

    def get_live_trials(self) -> set[Trial]:
        return self._live

    def get_trials(self) -> list[Trial]:
        raise AssertionError("read every trial of the experiment")


def _trial(number: int, status: str) -> Trial:
    config = make_config({}, TrialTicket(number=number, seed=number, replaces=None))
    trial = Trial("noop", config=config, trial_id=f"id{number}", stub=True)
    trial.set_status(status)
    return trial


@pytest.mark.parametrize("scheduler", ["asha", "median", "none"])
def test_the_first_pending_then_the_first_paused_live_trial_runs_next(scheduler: str) -> None:
    chooser = build_scheduler(StudySpec.model_validate(base_study(scheduler=scheduler)))
    running, paused, later, first = (
        _trial(1, Trial.RUNNING), _trial(2, Trial.PAUSED), _trial(7, Trial.PENDING),
        _trial(4, Trial.PENDING),
    )  # fmt: skip
    assert chooser.choose_trial_to_run(_Controller([running, paused, later, first])) is first
    assert (
        chooser.choose_trial_to_run(_Controller([running, _trial(5, Trial.PAUSED), paused]))
        is paused
    )
    assert chooser.choose_trial_to_run(_Controller([running])) is None
