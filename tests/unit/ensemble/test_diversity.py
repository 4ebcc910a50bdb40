"""Candidates chosen for diversity: the best trial of each configuration cluster first, the
rest by rank behind them (stand-ins for candidates whose model is unusable)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from searchsvc.ensemble.diversity import diverse_order, encode_params
from searchsvc.study.spec import StudySpec

SPEC = StudySpec.model_validate({
    "name": "diverse",
    "trainer": "mlp",
    "dataset": "mnist",
    "objective": {"metric": "val_loss", "mode": "min"},
    "search_space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
        "width_2": {"type": "int", "low": 100, "high": 200},
        "batch_size": 128,
    },
    "budget": {"n_trials": 10, "max_epochs": 1},
})  # fmt: skip


def _ranked(configs: list[dict]) -> list[SimpleNamespace]:
    """Stand-ins for completed trials with these params, best first (only ``number`` and
    ``params`` are read)."""
    return [SimpleNamespace(number=n, params=p) for n, p in enumerate(configs)]


def test_the_best_of_each_cluster_comes_first_and_the_rest_follow_by_rank() -> None:
    relu = {"lr": 1e-3, "activation": "relu", "width_2": 150}
    ranked = _ranked([
        relu, {**relu, "lr": 1.1e-3}, {**relu, "width_2": 152},  # near-copies of the best
        {"lr": 5e-2, "activation": "tanh", "width_2": 110},  # another corner of the space
        {**relu, "lr": 1.2e-3}, {"lr": 4e-2, "activation": "tanh", "width_2": 112},
    ])  # fmt: skip

    order = diverse_order(ranked, SPEC, candidates=2)

    assert [t.number for t in order] == [0, 3, 1, 2, 4, 5]


def test_with_no_more_trials_than_candidates_the_rank_is_kept() -> None:
    ranked = _ranked([{"lr": 1e-3, "activation": "relu"}] * 3)
    assert [t.number for t in diverse_order(ranked, SPEC, candidates=3)] == [0, 1, 2]


def test_identical_configurations_make_one_cluster_and_the_rest_by_rank() -> None:
    same = {"lr": 1e-3, "activation": "relu", "width_2": 150}
    other = {"lr": 1e-1, "activation": "tanh", "width_2": 200}
    ranked = _ranked([same, same, same, same, other, same, same])
    assert [t.number for t in diverse_order(ranked, SPEC, candidates=3)] == [0, 4, 1, 2, 3, 5, 6]


def test_params_are_points_on_the_search_spaces_scales() -> None:
    point = encode_params(SPEC, {"lr": 1e-2, "activation": "tanh", "width_2": 200})
    # lr two thirds up its log range; tanh one-hot halves; width at its top.
    np.testing.assert_allclose(point, [2 / 3, 0.0, np.sqrt(0.5), 1.0])
    absent = encode_params(SPEC, {"lr": 1e-4, "activation": "relu"})
    np.testing.assert_allclose(absent, [0.0, np.sqrt(0.5), 0.0, -1.0])
