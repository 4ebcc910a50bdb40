"""Search-space translation, samplers and schedulers."""

from __future__ import annotations

import optuna
import pytest

from searchsvc.execution.schedulers import build_scheduler, stopped_trial_ids
from searchsvc.search.samplers import build_sampler
from searchsvc.search.space import suggest_params, to_distribution
from searchsvc.study.spec import StudySpec
from tests.helpers import base_study


def _spec(**overrides) -> StudySpec:
    return StudySpec.model_validate(base_study(**overrides))


def test_conditional_param_exists_only_when_its_condition_holds():
    spec = _spec()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_with, seen_without = 0, 0
    for _ in range(40):
        trial = study.ask()
        params = suggest_params(trial, spec.search_space)
        assert params["batch_size"] == 128  # fixed params reach the trainer...
        assert "batch_size" not in trial.params  # ...but are not Optuna params
        if params["n_layers"] >= 2:
            assert 8 <= params["width_2"] <= 64
            seen_with += 1
        else:
            assert "width_2" not in params and "width_2" not in trial.params
            seen_without += 1
        study.tell(trial, 0.0)
    assert seen_with and seen_without


def test_log_float_becomes_a_log_uniform_distribution():
    spec = _spec()
    assert to_distribution(spec.search_space["lr"]) == optuna.distributions.FloatDistribution(
        1e-5, 1.0, log=True
    )
    assert to_distribution(spec.search_space["batch_size"]) is None


def test_log_uniform_samples_cover_the_decades():
    spec = _spec()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = []
    for _ in range(300):
        trial = study.ask()
        values.append(suggest_params(trial, spec.search_space)["lr"])
        study.tell(trial, 0.0)
    # Log-uniform: about a fifth of the draws in each of the five decades 1e-5..1.
    below_1e3 = sum(v < 1e-3 for v in values) / len(values)
    assert 0.3 < below_1e3 < 0.5


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "qmc", "cmaes"])
def test_every_single_objective_sampler_builds_and_samples_seeded(name):
    space = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "width": {"type": "int", "low": 8, "high": 64},
    }
    spec = _spec(sampler={"name": name}, search_space=space)

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=build_sampler(spec, seed=seed))
        rows = []
        for _ in range(4):
            trial = study.ask()
            rows.append(suggest_params(trial, spec.search_space))
            study.tell(trial, rows[-1]["lr"])
        return rows

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_grid_sampler_visits_every_combination_once():
    space = {
        "init": {"type": "categorical", "choices": ["xavier_normal", "he_normal", "zeros"]},
        "activation": {"type": "categorical", "choices": ["relu", "sigmoid"]},
        "lr": 0.01,
    }
    spec = _spec(sampler="grid", search_space=space)
    assert spec.grid_size() == 6
    study = optuna.create_study(sampler=build_sampler(spec, seed=0))
    combos = set()
    for _ in range(6):
        trial = study.ask()
        params = suggest_params(trial, spec.search_space)
        combos.add((params["init"], params["activation"]))
        study.tell(trial, 0.0)
    assert len(combos) == 6


def test_nsga2_sampler_serves_a_two_objective_study():
    objectives = [{"metric": "val_accuracy", "mode": "max"}, {"metric": "n_params", "mode": "min"}]
    spec = _spec(sampler="nsga2", objective=objectives)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=build_sampler(spec, seed=0)
    )
    for _ in range(3):
        trial = study.ask()
        suggest_params(trial, spec.search_space)
        study.tell(trial, [0.5, 10.0])
    assert len(study.best_trials) >= 1


@pytest.mark.parametrize(
    ("name", "cls_name"),
    [("asha", "AsyncHyperBandScheduler"), ("median", "MedianStoppingRule"),
     ("hyperband", "HyperBandScheduler"), ("none", "FIFOScheduler")],
)  # fmt: skip
def test_every_scheduler_counts_epochs_on_the_primary_metric(name, cls_name):
    scheduler = build_scheduler(_spec(scheduler=name))
    assert cls_name in [c.__name__ for c in type(scheduler).__mro__]
    if name != "none":
        assert scheduler._metric == "val_loss"
        assert scheduler._time_attr == "epoch"
    assert stopped_trial_ids(scheduler) == set()


class _FakeTrial:
    def __init__(self, trial_id: str, status: str) -> None:
        self.trial_id, self.status, self.is_saving = trial_id, status, False


class _FakeBracket:
    """A halving round that is due, with one paused loser and the running winner."""

    def __init__(self, loser: _FakeTrial, winner: _FakeTrial) -> None:
        self.loser, self.winner = loser, winner
        self.is_being_processed = False
        self.trials_to_unpause: set = set()

    def cur_iter_done(self) -> bool:
        return True

    def finished(self) -> bool:
        return False

    def successive_halving(self, metric: str, op: float):
        return [self.winner], [self.loser]

    def continue_trial(self, trial: _FakeTrial) -> bool:
        return True


class _FakeController:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop_trial(self, trial: _FakeTrial) -> None:
        self.stopped.append(trial.trial_id)


def test_hyperband_remembers_the_paused_losers_it_stops_through_the_controller():
    from ray.tune.experiment import Trial

    scheduler = build_scheduler(_spec(scheduler="hyperband"))
    controller = _FakeController()
    bracket = _FakeBracket(_FakeTrial("loser", Trial.PAUSED), _FakeTrial("winner", Trial.RUNNING))
    scheduler._process_bracket(controller, bracket)
    assert controller.stopped == ["loser"], "the real controller still stops the trial"
    assert stopped_trial_ids(scheduler) == {"loser"}


def test_the_params_a_trial_trained_with_add_the_fixed_ones_whose_condition_holds() -> None:
    from searchsvc.search.space import trained_params
    from searchsvc.study.spec import StudySpec
    from tests.helpers import base_study

    space = StudySpec.model_validate(base_study(search_space={
        "n_layers": {"type": "int", "low": 1, "high": 3},
        "width_2": {"type": "int", "low": 8, "high": 64, "when": "n_layers >= 2"},
        "patience": 0,
        "momentum": {"type": "fixed", "value": 0.9, "when": "n_layers >= 2"},
    })).search_space  # fmt: skip
    assert trained_params({"n_layers": 1}, space) == {"n_layers": 1, "patience": 0}
    assert trained_params({"n_layers": 2, "width_2": 9}, space) == {
        "n_layers": 2, "width_2": 9, "patience": 0, "momentum": 0.9,
    }  # fmt: skip
