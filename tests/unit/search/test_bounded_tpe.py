"""``sampler: {name: tpe, max_history: N}``: TPE fed the best 25 completed trials, the running
ones and the N most recent others; the same draws as Optuna's TPE while the study is smaller."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from searchsvc.errors import StudySpecError
from searchsvc.search.bounded_tpe import BoundedHistoryTPESampler, bounded_history
from searchsvc.study.loader import load_study
from tests.helpers import base_study

FLOAT = optuna.distributions.FloatDistribution(-10, 10)


def _trial(number: int, state: TrialState, value: float | None = None) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        params={"x": 0.0}, distributions={"x": FLOAT}, value=value, state=state,
        intermediate_values={1: value} if state == TrialState.PRUNED else None,
    )  # fmt: skip
    trial.number = number
    return trial


def test_the_history_keeps_the_best_25_the_running_and_the_most_recent_others():
    trials = [_trial(n, TrialState.COMPLETE, float(n)) for n in range(100)]  # best: lowest
    trials += [_trial(n, TrialState.PRUNED, 0.5) for n in range(100, 150)]
    trials += [_trial(n, TrialState.RUNNING) for n in range(150, 153)]
    kept = bounded_history(trials, 40, maximize=False)
    assert [t.number for t in kept] == [*range(25), *range(110, 153)]
    kept = bounded_history(trials, 40, maximize=True)
    assert [t.number for t in kept] == [*range(75, 100), *range(110, 153)]


def test_a_history_within_the_bound_is_left_whole():
    trials = [_trial(n, TrialState.COMPLETE, float(n)) for n in range(125)]
    assert bounded_history(trials, 100, maximize=False) is trials


def _draws(sampler: optuna.samplers.BaseSampler, n: int) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 3) ** 2, n_trials=n)
    return [t.params["x"] for t in study.trials]


def test_below_the_bound_it_draws_exactly_what_optunas_tpe_draws():
    options = {"seed": 3, "n_startup_trials": 5, "multivariate": True}
    plain = _draws(optuna.samplers.TPESampler(**options), 60)
    bounded = _draws(BoundedHistoryTPESampler(max_history=100, **options), 60)
    assert bounded == plain


def test_past_the_bound_the_sampler_sees_only_the_bounded_history():
    sampler = BoundedHistoryTPESampler(max_history=100, seed=0, n_startup_trials=5)
    seen: list[int] = []
    original = sampler._sample

    def spy(study, trial, search_space):
        seen.append(len(study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))
        return original(study, trial, search_space)

    sampler._sample = spy
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -10, 10) - 3) ** 2, n_trials=300)
    assert max(seen) == 125
    assert study.best_value < 0.01  # it still converges on x = 3


def test_max_history_is_refused_with_two_objectives_and_below_100(write_study):
    two = [{"metric": "val_loss", "mode": "min"}, {"metric": "n_params", "mode": "min"}]
    path = write_study(base_study(sampler={"name": "tpe", "max_history": 500}, objective=two))
    with pytest.raises(StudySpecError) as info:
        load_study(path)
    assert info.value.problems == [
        f"{path}: sampler -> max_history: only for one objective (TPE's best trials are kept "
        "by value)"
    ]
    path = write_study(base_study(sampler={"name": "tpe", "max_history": 50}))
    with pytest.raises(StudySpecError) as info:
        load_study(path)
    assert info.value.problems == [
        f"{path}: sampler -> max_history: Input should be greater than or equal to 100"
    ]
