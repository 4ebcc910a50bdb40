"""A study's start points on real Optuna storage (SQLite): ``enqueue:`` entries are the first
trials asked, a ``warm_start:`` study's COMPLETE trials join the history once, and a source
whose shared params have other distributions is refused with one line naming the param."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from searchsvc import keys
from searchsvc.errors import StudySpecError
from searchsvc.search.space import suggest_params
from searchsvc.search.storage import count_trials, open_study
from searchsvc.search.warm_start import apply_start_points, warm_start_problem
from searchsvc.study.spec import StudySpec
from tests.helpers import base_study

COMPLETE = optuna.trial.TrialState.COMPLETE


def _source(tmp_path: Path, high: float = 1.0) -> str:
    """A finished study 'earlier' of three COMPLETE trials and a PRUNED one."""
    url = f"sqlite:///{tmp_path / 'earlier.db'}"
    spec = StudySpec.model_validate(base_study(name="earlier"))
    space = dict(spec.search_space)
    space["lr"] = space["lr"].model_copy(update={"high": high})
    study = open_study(spec, url)
    for value in (0.5, 0.3, 0.4):
        trial = study.ask()
        suggest_params(trial, space)
        study.tell(trial, value)
    pruned = study.ask()
    suggest_params(pruned, space)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    return url


def _spec(url: str, **extra) -> StudySpec:
    return StudySpec.model_validate(
        base_study(name="later", warm_start={"study": "earlier", "storage": url}, **extra)
    )


def test_a_warm_start_adds_the_complete_trials_once_outside_the_budget(tmp_path) -> None:
    url = _source(tmp_path)
    spec = _spec(url)
    earlier = optuna.load_study(study_name="earlier", storage=url)
    study = open_study(spec, f"sqlite:///{tmp_path / 'later.db'}")

    assert warm_start_problem(spec) is None
    assert apply_start_points(study, spec) == (0, 3)
    assert apply_start_points(study, spec) == (0, 0)  # a continued run adds nothing again

    copied = study.get_trials()
    assert [(t.state, t.values) for t in copied] == [(COMPLETE, [0.5]), (COMPLETE, [0.3]),
                                                     (COMPLETE, [0.4])]  # fmt: skip
    done = earlier.get_trials(states=(COMPLETE,))
    assert [t.params for t in copied] == [t.params for t in done]
    assert [t.user_attrs[keys.WARM_FROM] for t in copied] == ["earlier#0", "earlier#1",
                                                               "earlier#2"]  # fmt: skip
    counts = count_trials(study)
    assert (counts.complete, counts.finished, counts.warm) == (0, 0, 3)
    assert study.best_trial.number == 1  # the sampler's history includes them


def test_a_shared_param_with_another_distribution_is_one_line_naming_it(tmp_path) -> None:
    url = _source(tmp_path, high=0.5)
    spec = _spec(url)
    study = open_study(spec, f"sqlite:///{tmp_path / 'later.db'}")

    line = (
        "warm_start: param 'lr' is FloatDistribution(high=0.5, log=True, low=1e-05, step=None) "
        "in study 'earlier' but FloatDistribution(high=1.0, log=True, low=1e-05, step=None) "
        "in search_space"
    )
    assert warm_start_problem(spec) == line
    with pytest.raises(StudySpecError, match="param 'lr'"):
        apply_start_points(study, spec)
    assert study.get_trials() == []  # nothing added, nothing enqueued
    assert keys.START_POINTS not in study.user_attrs


def test_a_missing_source_is_one_line_and_creates_no_database(tmp_path) -> None:
    missing = tmp_path / "none.db"
    spec = _spec(f"sqlite:///{missing}")
    assert (
        warm_start_problem(spec)
        == f"warm_start -> storage: no Optuna storage at sqlite:///{missing}"
    )
    assert not missing.exists()
    url = _source(tmp_path)
    other = StudySpec.model_validate(
        base_study(name="later", warm_start={"study": "nope", "storage": url})
    )
    assert warm_start_problem(other) == f"warm_start -> study: no study 'nope' in {url}"


def test_enqueued_entries_are_the_first_trials_asked(tmp_path) -> None:
    entries = [{"lr": 0.01, "n_layers": 2, "width_2": 16, "optimizer": "adam"}, {"lr": 0.002}]
    spec = StudySpec.model_validate(base_study(name="queued", enqueue=entries))
    study = open_study(spec, f"sqlite:///{tmp_path / 'q.db'}")

    assert apply_start_points(study, spec) == (2, 0)
    first = suggest_params(study.ask(), spec.search_space)
    second = suggest_params(study.ask(), spec.search_space)

    assert first == {**entries[0], "batch_size": 128}
    assert second["lr"] == 0.002  # the rest of a partial entry is sampled
    assert apply_start_points(study, spec) == (0, 0)
    assert len(study.get_trials()) == 2  # nothing enqueued twice
