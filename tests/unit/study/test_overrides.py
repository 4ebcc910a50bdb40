"""``--set key.path=value``: any study-file field overridden before validation; a bad override
is one line naming ``--set <path>``, never the file."""

from __future__ import annotations

import pytest

from searchsvc.errors import StudySpecError
from searchsvc.study.loader import load_study
from searchsvc.study.overrides import parse_overrides
from searchsvc.study.spec import FixedParam
from tests.helpers import base_study


def _problems(path, overrides) -> list[str]:
    with pytest.raises(StudySpecError) as info:
        load_study(path, overrides=overrides)
    return info.value.problems


def test_values_are_read_as_yaml():
    assert parse_overrides(
        ["budget.n_trials=3", "sampler={name: random}", "seed=", "a.b=x=y"]
    ) == {
        "budget.n_trials": 3,
        "sampler": {"name": "random"},
        "seed": None,
        "a.b": "x=y",
    }


def test_override_changes_nested_fields_and_makes_a_range_a_constant(write_study):
    overrides = parse_overrides(
        ["budget.n_trials=3", "search_space.lr=0.01", "ensemble.size=2", "objective.mode=max"]
    )
    spec = load_study(write_study(base_study()), overrides=overrides).spec
    assert spec.budget.n_trials == 3 and spec.budget.max_epochs == 2
    assert spec.search_space["lr"] == FixedParam(type="fixed", value=0.01)
    assert spec.ensemble.size == 2
    assert spec.primary.mode == "max"


def test_bad_value_is_blamed_on_the_override_not_the_file(write_study):
    path = write_study(base_study())
    assert _problems(path, {"budget.n_trials": "many"}) == [
        "--set budget.n_trials: budget -> n_trials: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_unknown_key_is_blamed_on_the_override(write_study):
    path = write_study(base_study())
    assert _problems(path, {"budget.n_trial": 3}) == [
        "--set budget.n_trial: budget -> n_trial: unknown key 'n_trial' (did you mean "
        "'n_trials'?); valid keys: max_concurrent_trials, max_epochs, max_failures, "
        "n_trials, time_budget_s"
    ]


def test_bad_trainer_name_is_blamed_on_the_override(write_study):
    problems = _problems(write_study(base_study()), {"trainer": "nope"})
    assert len(problems) == 1 and problems[0].startswith("--set trainer: trainer: ")


def test_file_problems_still_name_the_file(write_study):
    path = write_study(base_study(seed="x"))
    assert _problems(path, {"budget.n_trials": 2}) == [
        f"{path}: seed: Input should be a valid integer, unable to parse string as an integer"
    ]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            ["budget.n_trials"],
            "--set budget.n_trials: expected key.path=value, e.g. budget.n_trials=3",
        ),
        (["=3"], "--set =3: expected key.path=value, e.g. budget.n_trials=3"),
        (["budget..n=3"], "--set budget..n=3: expected key.path=value, e.g. budget.n_trials=3"),
        (
            ["seed=[1"],
            "--set seed: value '[1' is not YAML: expected ',' or ']', but got '<stream end>'",
        ),
    ],
)
def test_malformed_override_is_one_line(items, message):
    with pytest.raises(StudySpecError) as info:
        parse_overrides(items)
    assert info.value.problems == [message]


def test_path_through_a_scalar_is_one_line(write_study):
    path = write_study(base_study())
    assert _problems(path, {"budget.n_trials.x": 1}) == [
        "--set budget.n_trials.x: budget.n_trials is 4, not a mapping"
    ]
