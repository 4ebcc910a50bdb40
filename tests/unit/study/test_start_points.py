"""``enqueue:`` in the study file: each entry checked against the search space, one line
naming the file, the entry's index and the param."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchsvc.errors import StudySpecError
from searchsvc.study.loader import load_study
from tests.helpers import REPO, base_study


def _errors(path: Path) -> list[str]:
    with pytest.raises(StudySpecError) as info:
        load_study(path)
    return info.value.problems


def test_enqueued_entries_inside_the_space_load_in_order(write_study) -> None:
    entries = [{"lr": 0.01, "n_layers": 2, "width_2": 16, "optimizer": "adam"}, {"lr": 1e-3}]
    spec = load_study(write_study(base_study(enqueue=entries))).spec
    assert spec.enqueue == entries


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        ({"lr": 2.0}, "enqueue -> 1 -> lr: 2.0 is outside [1e-05, 1.0]"),
        ({"n_layers": 2.5}, "enqueue -> 1 -> n_layers: 2.5 is not an integer"),
        ({"n_layers": True}, "enqueue -> 1 -> n_layers: True is not an integer"),
        ({"lr": "fast"}, "enqueue -> 1 -> lr: 'fast' is not a finite number"),
        (
            {"optimizer": "rmsprop"},
            "enqueue -> 1 -> optimizer: 'rmsprop' is not one of the choices 'sgd', 'adam'",
        ),
        (
            {"optimiser": "adam"},
            "enqueue -> 1 -> optimiser: not a param of search_space (did you mean 'optimizer'?)",
        ),
        (
            {"batch_size": 64},
            "enqueue -> 1 -> batch_size: a constant of search_space (128), not a searched param",
        ),
        (
            {"n_layers": 1, "width_2": 16},
            "enqueue -> 1 -> width_2: its condition 'n_layers >= 2' does not hold in this entry "
            "(n_layers=1)",
        ),
    ],
)
def test_an_enqueued_value_outside_its_distribution_is_one_line(write_study, entry, line):
    path = write_study(base_study(enqueue=[{"lr": 0.01}, entry]))
    assert _errors(path) == [f"{path}: {line}"]


def test_the_flagship_enqueues_the_mlp_defaults_that_lie_in_its_space() -> None:
    from trainers.mlp.params import MLPParams

    spec = load_study(REPO / "studies" / "mnist.yaml", check_names=False).spec
    first = spec.enqueue[0]
    defaults = MLPParams()
    expected = {
        "n_layers": defaults.n_layers, "width_1": defaults.width, "width_2": defaults.width,
        "activation": defaults.activation, "init": defaults.init, "dropout": defaults.dropout,
        "input_dropout": defaults.input_dropout, "norm": defaults.norm,
        "optimizer": defaults.optimizer, "lr": defaults.lr, "clip_norm": defaults.clip_norm,
        "batch_size": defaults.batch_size,
    }  # fmt: skip
    assert first == expected
    # weight_decay's default (0) is outside the space's log range: the sampler draws it.
    assert "weight_decay" not in first and spec.search_space["weight_decay"].low > 0
