"""Ensemble selection, prediction, metrics, the members directory and the study ensemble.

No MLflow store or Ray: the study ensemble runs on a real Optuna SQLite study with fake stored
models.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from searchsvc.ensemble import build as study_ensemble
from searchsvc.ensemble.build import best_single_index, build_study_ensemble
from searchsvc.ensemble.members import (
    load_members_dir,
    read_manifest,
    save_members_dir,
    write_members_dir,
)
from searchsvc.ensemble.metrics import accuracy, expected_calibration_error, log_loss
from searchsvc.ensemble.predictor import Ensemble, Member, feature_range_of, member_val_probs
from searchsvc.ensemble.selection import select_greedy, select_top_k
from searchsvc.errors import EnsembleError
from searchsvc.search.storage import open_study
from searchsvc.study.locations import StudyPaths
from searchsvc.study.spec import StudySpec
from searchsvc.study_run import StudyRun
from searchsvc.trainer import BaseTrainer, Dataset
from tests.helpers import LINEAR_TRAINER_SOURCE, base_study

N_FEATURES, N_CLASSES = 4, 3


class TinyTrainer(BaseTrainer):
    """Just enough of a trainer to rebuild networks: the width comes from the params."""

    name = "tiny"
    objective_metrics = frozenset({"val_loss"})

    def fit(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError

    def build_network(self, params: dict, n_features: int, n_classes: int) -> nn.Module:
        hidden = int(params["hidden"])
        return nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )


TINY = TinyTrainer()


def tiny_ensemble(
    weights: tuple[float, ...] = (1.0, 3.0),
    seed: int = 0,
    feature_range: tuple[float, float] | None = None,
) -> Ensemble:
    """Two (or len(weights)) tiny networks; ``feature_range`` as if recorded at training."""
    torch.manual_seed(seed)
    members, networks = [], []
    for i, weight in enumerate(weights):
        params = {"hidden": 5 + i}
        members.append(Member(trial_number=10 + i, weight=weight, params=params, val_score=0.5))
        networks.append(TINY.build_network(params, N_FEATURES, N_CLASSES))
    return Ensemble(
        members,
        networks,
        N_FEATURES,
        N_CLASSES,
        class_names=("a", "b", "c"),
        feature_range=feature_range,
    )


def x_data(n: int = 11, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


def probs_from_true(p_true: list[float], y: np.ndarray, k: int = 2) -> np.ndarray:
    """A (n, k) probability matrix giving p_true to the label and sharing the rest evenly."""
    probs = np.empty((len(y), k))
    for i, (p, label) in enumerate(zip(p_true, y, strict=True)):
        probs[i, :] = (1.0 - p) / (k - 1)
        probs[i, label] = p
    return probs


# ---------------------------------------------------------------------------- metrics


def test_accuracy_counts_argmax_hits_with_lowest_index_ties() -> None:
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
    # row 0 ties -> class 0 (correct), row 1 correct, row 2 wrong, row 3 wrong
    assert accuracy(probs, np.array([0, 1, 1, 1])) == pytest.approx(0.5)


def test_log_loss_is_mean_nll_and_clips_zero_probabilities() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert log_loss(probs, np.array([0, 1])) == pytest.approx(-(math.log(0.5) + math.log(0.1)) / 2)
    assert log_loss(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))


def test_ece_by_hand_including_values_on_bin_edges() -> None:
    # 5 bins with edges 0, .2, .4, .6, .8, 1; a confidence on an edge belongs to the lower bin.
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # bin (.4,.6]: {0.6 right} -> |1-.6|*1 = .4 ; bin (.6,.8]: {0.7 wrong, 0.8 right}
    # -> |.5-.75|*2 = .5 ; bin (.8,1]: {0.9 right} -> |1-.9|*1 = .1 ; (.4+.5+.1)/4 = .25
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(0.25)
    assert expected_calibration_error(np.array([[0.75, 0.25]]), np.array([0])) == pytest.approx(
        0.25
    )
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("probs", "y", "match"),
    [
        (np.ones(3), np.zeros(3, int), "2-D"),
        (np.ones((3, 2)) / 2, np.zeros(2, int), "one entry per row"),
        (np.ones((3, 2)) / 2, np.zeros(3), "integers"),
        (np.ones((3, 2)) / 2, np.array([0, 1, 2]), r"0\.\.1"),
        (np.ones((0, 2)), np.zeros(0, int), "empty"),
    ],
)
def test_metrics_reject_bad_arguments(probs: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(EnsembleError, match=match):
        log_loss(probs, y)


# ---------------------------------------------------------------------------- selection


def test_top_k_weights_the_best_prefix_by_validation_loss_equally() -> None:
    y = np.array([0, 1, 0, 1])
    poor = probs_from_true([0.2] * 4, y)
    left = probs_from_true([0.95, 0.95, 0.4, 0.4], y)
    right = probs_from_true([0.4, 0.4, 0.95, 0.95], y)
    flat = probs_from_true([0.6] * 4, y)
    val_probs = np.stack([poor, left, right, flat])  # ranked by some objective, not by loss
    # By loss: left, right (.484 each), flat (.511), poor; left+right (.393) is the best prefix.
    np.testing.assert_allclose(select_top_k(val_probs, y, 3), [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(select_top_k(val_probs, y, 9), [0, 0.5, 0.5, 0])  # capped at m
    np.testing.assert_allclose(select_top_k(val_probs, y, 1), [0, 1, 0, 0])
    with pytest.raises(EnsembleError, match="positive"):
        select_top_k(val_probs, y, 0)


def test_greedy_finds_the_complementary_pair() -> None:
    y = np.array([0, 1, 0, 1])
    flat = probs_from_true([0.6] * 4, y)  # best single model (nll .511)
    left = probs_from_true([0.95, 0.95, 0.4, 0.4], y)  # nll .484 each, but complementary:
    right = probs_from_true([0.4, 0.4, 0.95, 0.95], y)  # their average has nll .393
    val_probs = np.stack([flat, left, right])
    weights = select_greedy(val_probs, y, 2, init_size=1)
    np.testing.assert_allclose(weights, [0.0, 0.5, 0.5])
    assert log_loss((left + right) / 2, y) < min(log_loss(p, y) for p in val_probs)


def test_greedy_selects_with_replacement_and_matches_the_best_mix() -> None:
    y = np.array([0, 1, 0, 1])
    weak = probs_from_true([0.55] * 4, y)
    fixer = probs_from_true([0.5, 0.5, 0.5, 0.95], y)  # only good where `strong` fails
    strong = probs_from_true([0.9, 0.9, 0.9, 0.3], y)
    val_probs = np.stack([weak, fixer, strong])
    weights = select_greedy(val_probs, y, 5, init_size=1)
    # By hand: init = strong (lowest nll .380); step 2 adds strong again (.380 < .385 for
    # strong+fixer); then fixer (2/3 strong: .362), then strong, strong -> 4:1.
    np.testing.assert_allclose(weights, [0.0, 0.2, 0.8])
    # 0.8 is also the best mixing weight on a 0.1 grid, i.e. the known best mix.
    grid = {w: log_loss(w * strong + (1 - w) * fixer, y) for w in np.linspace(0, 1, 11)}
    assert min(grid, key=grid.get) == pytest.approx(0.8)


def test_greedy_sorted_init_and_tie_breaks_are_deterministic() -> None:
    y = np.array([0, 1, 0, 1])
    good = probs_from_true([0.8, 0.7, 0.8, 0.7], y)
    bad = probs_from_true([0.3] * 4, y)
    val_probs = np.stack([bad, good, bad, good])  # exact duplicates at 1 and 3
    # init_size=1 takes the lowest-index of the tied best; later picks also prefer index 1.
    np.testing.assert_allclose(select_greedy(val_probs, y, 1, init_size=1), [0, 1, 0, 0])
    np.testing.assert_allclose(select_greedy(val_probs, y, 3, init_size=1), [0, 1, 0, 0])
    # init_size=2 could average both duplicates, but that is no better: ties go to the fewer.
    np.testing.assert_allclose(select_greedy(val_probs, y, 3, init_size=2), [0, 1, 0, 0])
    np.testing.assert_allclose(select_greedy(val_probs, y, 2, init_size=3), [0, 1, 0, 0])


def test_greedy_never_forces_a_poor_candidate_in_and_keeps_the_best_prefix() -> None:
    y = np.array([0, 1, 0, 1])
    strong = probs_from_true([0.9] * 4, y)
    poor = probs_from_true([0.3] * 4, y)
    val_probs = np.stack([strong, poor, poor.copy(), poor.copy()])
    # The old sorted init took the best three (strong and two poor) whatever their loss.
    np.testing.assert_allclose(select_greedy(val_probs, y, 4, init_size=3), [1, 0, 0, 0])


def test_greedy_matches_a_naive_reference_on_random_candidates() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 50, 3)) * 2
    val_probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    y = rng.integers(0, 3, size=50)
    size, init_size = 8, 2
    # Naive Caruana with its safeguards: the best sorted init of 1..init_size, then full
    # log-loss recomputed for every candidate average at each step, the best prefix kept.
    order = sorted(range(6), key=lambda i: (log_loss(val_probs[i], y), i))
    inits = [order[:n] for n in range(1, init_size + 1)]
    picks = min(inits, key=lambda p: (log_loss(val_probs[p].mean(axis=0), y), len(p)))
    prefixes = [list(picks)]
    while len(picks) < size:
        losses = [log_loss(val_probs[picks + [c]].mean(axis=0), y) for c in range(6)]
        picks = picks + [int(np.argmin(losses))]
        prefixes.append(picks)
    best = min(prefixes, key=lambda p: (log_loss(val_probs[p].mean(axis=0), y), len(p)))
    expected = np.bincount(best, minlength=6) / len(best)
    np.testing.assert_allclose(select_greedy(val_probs, y, size, init_size=init_size), expected)


def test_selection_signatures_cannot_receive_test_data() -> None:
    # Selection sees only the validation matrix and labels: no argument could carry test data.
    assert list(inspect.signature(select_greedy).parameters) == [
        "val_probs",
        "y_val",
        "size",
        "init_size",
    ]
    assert list(inspect.signature(select_top_k).parameters) == ["val_probs", "y_val", "k"]


@pytest.mark.parametrize(
    ("val_probs", "y", "match"),
    [
        (np.full((2, 3), 0.5), np.zeros(3, int), "3-D"),
        (np.full((2, 3, 2), 0.5), np.zeros(4, int), "shape"),
        (np.full((0, 3, 2), 0.5), np.zeros(3, int), "no candidates"),
        (np.where(np.arange(12).reshape(2, 3, 2) == 7, np.nan, 0.5), np.zeros(3, int), r"\[1\]"),
    ],
)
def test_greedy_rejects_bad_matrices(val_probs: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(EnsembleError, match=match):
        select_greedy(val_probs, y, 3)


# ---------------------------------------------------------------------------- prediction


def manual_average(ens: Ensemble, x: np.ndarray, raw_weights: tuple[float, ...]) -> np.ndarray:
    with torch.no_grad():
        probs = [torch.softmax(net(torch.from_numpy(x)), dim=1).numpy() for net in ens.networks]
    return sum(w * p for w, p in zip(raw_weights, probs, strict=True)) / sum(raw_weights)


def test_predict_proba_is_the_weighted_average_of_member_softmaxes() -> None:
    ens = tiny_ensemble((1.0, 3.0))
    x = x_data()
    probs = ens.predict_proba(x)
    assert probs.dtype == np.float32 and probs.shape == (11, N_CLASSES)
    np.testing.assert_allclose(probs, manual_average(ens, x, (1.0, 3.0)), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(ens.predict(x), probs.argmax(axis=1))
    assert [m.trial_number for m in ens.members] == [10, 11]
    assert [m.weight for m in ens.members] == [1.0, 3.0]  # as given; prediction normalises
    np.testing.assert_allclose(ens.weights, [0.25, 0.75])


def test_batching_and_input_types_do_not_change_the_result() -> None:
    ens = tiny_ensemble()
    x = x_data(n=10)
    whole = ens.predict_proba(x)
    np.testing.assert_allclose(ens.predict_proba(x, batch_size=3), whole, atol=1e-6)
    np.testing.assert_allclose(ens.predict_proba(torch.from_numpy(x)), whole, atol=1e-6)
    np.testing.assert_allclose(ens.predict_proba(x.astype(np.float64)), whole, atol=1e-6)
    # (n, *image_shape) is flattened when it holds n_features values per sample
    np.testing.assert_allclose(ens.predict_proba(x.reshape(10, 2, 2)), whole, atol=1e-6)
    np.testing.assert_allclose(ens.predict_proba(x.astype(np.float16)), whole, atol=1e-2)


@pytest.mark.parametrize(
    ("ints", "dtype_name", "how"),
    [
        (np.arange(8, dtype=np.uint8).reshape(2, 4) * 30, "uint8", r"astype\(np\.float32\) / 255"),
        (np.arange(8, dtype=np.int64).reshape(2, 4), "int64", r"astype\(np\.float32\)"),
        (torch.arange(8, dtype=torch.uint8).reshape(2, 4), "uint8", "/ 255"),
        (np.arange(16, dtype=np.int16).reshape(2, 2, 4)[:, 0], "int16", "scaling"),
    ],
)
def test_integer_features_are_refused_naming_the_dtype_and_the_scaling(
    ints: np.ndarray | torch.Tensor, dtype_name: str, how: str
) -> None:
    # Raw 0-255 pixels would be cast to float and confidently mispredicted: refuse them.
    with pytest.raises(EnsembleError, match=f"got {dtype_name} input - .*{how}") as info:
        tiny_ensemble().predict_proba(ints)
    message = str(info.value)
    assert "\n" not in message
    assert "expected float features scaled like the training data" in message
    assert "divided by 255 into [0, 1]" in message  # no recorded range: the MNIST rule
    # With a recorded range, the message states it instead.
    with pytest.raises(EnsembleError, match=r"training features spanned \[0, 1\]"):
        tiny_ensemble(feature_range=(0.0, 1.0)).predict_proba(ints)


def test_member_val_probs_refuses_integer_features_too() -> None:
    with pytest.raises(EnsembleError, match="got uint8 input"):
        member_val_probs(tiny_ensemble().networks, np.ones((3, N_FEATURES), np.uint8))


def test_float_input_far_outside_the_training_range_is_refused() -> None:
    ens = tiny_ensemble(feature_range=(0.0, 1.0))
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, N_FEATURES)).astype(np.float32)
    pixels[0, 0] = 255.0
    scaled = pixels / 255.0
    probs = ens.predict_proba(scaled)  # scaled like training: accepted
    np.testing.assert_allclose(probs, tiny_ensemble().predict_proba(scaled), atol=1e-6)
    with pytest.raises(EnsembleError) as info:
        ens.predict_proba(pixels)
    message = str(info.value)
    assert "\n" not in message
    assert "input values span [" in message and ", 255]" in message
    assert "training features spanned [0, 1]" in message
    assert "accepted [-0.5, 1.5]" in message and "divide by 255" in message
    # A little past the training extremes is normal for unseen samples; far past is not.
    ens.predict_proba(np.full((2, N_FEATURES), 1.4, np.float32))
    ens.predict_proba(np.full((2, N_FEATURES), -0.4, np.float32))
    rows = np.zeros((3, N_FEATURES), np.float32)
    rows[1, 2] = -0.6
    with pytest.raises(EnsembleError, match=r"1 of 3 rows outside\): scale the input") as info:
        ens.predict_proba(rows)
    assert "divide by 255" not in str(info.value)  # too small to be unscaled pixels


def test_standardised_training_range_scales_the_margin_with_its_width() -> None:
    ens = tiny_ensemble(feature_range=(-4.0, 6.0))  # width 10: accepted [-9, 11]
    ens.predict_proba(np.full((1, N_FEATURES), 10.9, np.float32))
    with pytest.raises(EnsembleError, match=r"accepted \[-9, 11\]"):
        ens.predict_proba(np.full((1, N_FEATURES), 11.2, np.float32))


@pytest.mark.parametrize(
    ("feature_range", "match"),
    [
        ((1.0, 0.0), r"min <= max; got \[1\.0, 0\.0\]"),
        ((0.0, float("nan")), "finite"),
        (("a", 1.0), r"\(min, max\) numbers"),
        ((0.0,), r"\(min, max\) numbers"),
    ],
)
def test_ensemble_refuses_a_malformed_feature_range(
    feature_range: tuple[float, ...], match: str
) -> None:
    with pytest.raises(EnsembleError, match=match):
        tiny_ensemble(feature_range=feature_range)  # type: ignore[arg-type]


def test_feature_range_of_spans_all_arrays_and_skips_missing_ones() -> None:
    low, high = feature_range_of(np.array([[0.2, 0.5]]), None, np.array([[-0.1], [0.9]]))
    assert (low, high) == pytest.approx((-0.1, 0.9))
    with pytest.raises(EnsembleError, match="non-empty"):
        feature_range_of(None, np.empty((0, 3)))
    with pytest.raises(EnsembleError, match="not finite"):
        feature_range_of(np.array([0.0, np.inf]))


def test_evaluate_reports_the_three_metrics() -> None:
    ens = tiny_ensemble()
    x, y = x_data(n=30), np.arange(30) % N_CLASSES
    probs = ens.predict_proba(x)
    result = ens.evaluate(x, y)
    assert result == pytest.approx(
        {
            "accuracy": accuracy(probs, y),
            "nll": log_loss(probs, y),
            "ece": expected_calibration_error(probs, y),
        }
    )


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.ones(4, np.float32), r"must be 2-D .*got shape \(4,\)"),
        (np.ones((2, 5), np.float32), "expected 4, got 5"),
        (np.ones((2, 3, 2), np.float32), r"expected 4 per sample, got shape \(2, 3, 2\)"),
        (np.array([["a", "b", "c", "d"]]), "dtype <U1"),
        (np.ones((2, 4), dtype=bool), "dtype bool"),
        (np.array([[1, 2, 3, 4]], dtype=object), "dtype object"),
        (np.ones((2, 4), np.complex64), "dtype complex64"),
        (np.array([[np.nan, 1, np.inf, np.nan]]), "2 NaN and 1 inf"),
        (np.array([[1e39, 0, 0, 0]]), "overflow float32"),
        (np.ones((0, 4), np.float32), r"empty: shape \(0, 4\)"),
        (np.ones((0,), np.float32), "empty"),
    ],
)
def test_bad_input_gives_a_one_line_ensemble_error(bad: np.ndarray, match: str) -> None:
    with pytest.raises(EnsembleError, match=match) as info:
        tiny_ensemble().predict_proba(bad)
    assert "\n" not in str(info.value)


def test_ensemble_construction_and_device_errors() -> None:
    net = TINY.build_network({"hidden": 3}, N_FEATURES, N_CLASSES)
    with pytest.raises(EnsembleError, match="pair up"):
        Ensemble([Member(0, 1.0, {"hidden": 3}, None)] * 2, [net], N_FEATURES, N_CLASSES)
    with pytest.raises(EnsembleError, match="> 0"):
        Ensemble([Member(0, 0.0, {"hidden": 3}, None)], [net], N_FEATURES, N_CLASSES)
    with pytest.raises(EnsembleError, match="batch_size"):
        tiny_ensemble().predict_proba(x_data(), batch_size=0)
    with pytest.raises(EnsembleError, match="logits of shape"):
        Ensemble([Member(0, 1.0, {}, None)], [nn.Linear(4, 2)], N_FEATURES, N_CLASSES).predict(
            x_data()
        )
    if not torch.cuda.is_available():
        with pytest.raises(EnsembleError, match="CUDA is not available"):
            tiny_ensemble().to("cuda:0")
    assert tiny_ensemble().to("cpu").device == torch.device("cpu")


def test_member_val_probs_stacks_each_networks_softmax() -> None:
    ens = tiny_ensemble()
    x = x_data(n=9)
    stacked = member_val_probs(ens.networks, x, batch_size=4)
    assert stacked.shape == (2, 9, N_CLASSES) and stacked.dtype == np.float32
    for i, net in enumerate(ens.networks):
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
        np.testing.assert_allclose(stacked[i], expected, atol=1e-6)
    # the ensemble is the weighted sum of these slices
    np.testing.assert_allclose(
        np.tensordot(ens.weights, stacked, axes=1), ens.predict_proba(x), atol=1e-6
    )


# ---------------------------------------------------------------------------- members dir


def test_members_dir_from_trial_files_round_trips(tmp_path: Path) -> None:
    ens = tiny_ensemble((2.0, 1.0))
    entries = []
    for member, net in zip(ens.members, ens.networks, strict=True):
        model_dir = tmp_path / "study" / f"trial_{member.trial_number}" / "model"
        model_dir.mkdir(parents=True)
        torch.save(net.state_dict(), model_dir / "state_dict.pt")
        (model_dir / "params.json").write_text(json.dumps(member.params))
        params = json.loads((model_dir / "params.json").read_text())
        entries.append(
            (Member(member.trial_number, member.weight, params, 0.5), model_dir / "state_dict.pt")
        )
    out = write_members_dir(
        entries,
        tmp_path / "members",
        trainer_ref="tiny",
        n_features=N_FEATURES,
        n_classes=N_CLASSES,
        class_names=("a", "b", "c"),
    )
    manifest = read_manifest(out)
    assert manifest["n_features"] == N_FEATURES and manifest["trainer"] == "tiny"
    first = manifest["members"][0]
    assert (out / first["dir"] / "state_dict.pt").is_file()
    assert json.loads((out / first["dir"] / "params.json").read_text()) == {"hidden": 5}

    loaded = load_members_dir(out, resolver=lambda ref: TINY)
    x = x_data()
    np.testing.assert_allclose(loaded.predict_proba(x), ens.predict_proba(x), atol=1e-6)
    assert loaded.members == [
        Member(10, 2.0, {"hidden": 5}, 0.5),
        Member(11, 1.0, {"hidden": 6}, 0.5),
    ]
    assert loaded.class_names == ("a", "b", "c")

    again = load_members_dir(
        save_members_dir(loaded, tmp_path / "again", trainer_ref="tiny"), resolver=lambda ref: TINY
    )
    np.testing.assert_allclose(again.predict_proba(x), ens.predict_proba(x), atol=1e-6)


def test_members_dir_errors_name_the_trial(tmp_path: Path) -> None:
    ens = tiny_ensemble()
    out = save_members_dir(ens, tmp_path / "m", trainer_ref="tiny")
    manifest = read_manifest(out)
    manifest["members"][1]["params"]["hidden"] = 99  # the saved weights no longer fit
    (out / "members.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match="trial 11: state dict does not fit"):
        load_members_dir(out, resolver=lambda ref: TINY)
    (out / manifest["members"][0]["dir"] / "state_dict.pt").unlink()
    with pytest.raises(EnsembleError, match="trial 10: missing state dict"):
        load_members_dir(out, resolver=lambda ref: TINY)
    with pytest.raises(EnsembleError, match="not empty"):
        save_members_dir(ens, out, trainer_ref="tiny")
    with pytest.raises(EnsembleError, match="no members.json"):
        load_members_dir(tmp_path)


def test_feature_range_round_trips_through_the_members_dir(tmp_path: Path) -> None:
    out = save_members_dir(
        tiny_ensemble(feature_range=(0.0, 1.0)), tmp_path / "m", trainer_ref="tiny"
    )
    assert read_manifest(out)["feature_range"] == {"min": 0.0, "max": 1.0}
    loaded = load_members_dir(out, resolver=lambda ref: TINY)
    assert loaded.feature_range == (0.0, 1.0)
    with pytest.raises(EnsembleError, match="training features spanned"):
        loaded.predict_proba(np.full((2, N_FEATURES), 255.0, np.float32))


def test_manifest_without_feature_range_loads_and_applies_only_the_dtype_rule(
    tmp_path: Path,
) -> None:
    # Ensembles saved before the range was recorded have no such key.
    out = save_members_dir(tiny_ensemble(), tmp_path / "m", trainer_ref="tiny")
    manifest = json.loads((out / "members.json").read_text())
    del manifest["feature_range"]
    (out / "members.json").write_text(json.dumps(manifest))
    loaded = load_members_dir(out, resolver=lambda ref: TINY)
    assert loaded.feature_range is None
    big = np.full((2, N_FEATURES), 255.0, np.float32)
    np.testing.assert_allclose(loaded.predict_proba(big), tiny_ensemble().predict_proba(big))
    with pytest.raises(EnsembleError, match="got uint8 input"):
        loaded.predict_proba(big.astype(np.uint8))


def test_malformed_feature_range_in_the_manifest_names_the_file(tmp_path: Path) -> None:
    out = save_members_dir(tiny_ensemble(), tmp_path / "m", trainer_ref="tiny")
    manifest = json.loads((out / "members.json").read_text())
    manifest["feature_range"] = {"min": 1.0, "max": -1.0}
    (out / "members.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match=r"members\.json: feature_range must be finite"):
        load_members_dir(out, resolver=lambda ref: TINY)


def _linear_members_dir(out: Path, trainer_ref: str) -> tuple[Ensemble, Path]:
    """A one-member ensemble of ``nn.Linear`` (what LINEAR_TRAINER_SOURCE builds), saved."""
    linear = Ensemble(
        [Member(0, 1.0, {}, 0.5)], [nn.Linear(N_FEATURES, N_CLASSES)], N_FEATURES, N_CLASSES
    )
    return linear, save_members_dir(linear, out, trainer_ref=trainer_ref)


def test_load_members_dir_default_resolver_imports_module_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "searchsvc_test_ens_trainer"
    (tmp_path / f"{module}.py").write_text(LINEAR_TRAINER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    linear, out = _linear_members_dir(tmp_path / "tiny", f"{module}:tiny")
    loaded = load_members_dir(out)
    assert all(isinstance(net, nn.Linear) for net in loaded.networks)
    np.testing.assert_allclose(loaded.predict_proba(x_data()), linear.predict_proba(x_data()))
    _, out = _linear_members_dir(tmp_path / "no_module", "no_such_module:tiny")
    with pytest.raises(EnsembleError, match="cannot rebuild ensemble members: .*no_such_module"):
        load_members_dir(out)
    _, out = _linear_members_dir(tmp_path / "missing", f"{module}:missing")
    with pytest.raises(EnsembleError, match="cannot rebuild ensemble members: "):
        load_members_dir(out)


def test_load_members_dir_default_resolver_refuses_a_trainer_without_build_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import searchsvc.registry

    class NoBuild:
        build_network = None

    monkeypatch.setattr(searchsvc.registry, "resolve_trainer", lambda ref: NoBuild())
    _, out = _linear_members_dir(tmp_path / "m", "anything:here")
    with pytest.raises(EnsembleError, match=r"which has no build_network\(\)"):
        load_members_dir(out)


# ---------------------------------------------------------------------------- study ensemble


class _FakeClient:
    """Serves each trial's ``model/`` folder from disk, as MLflow's download_artifacts does."""

    def __init__(self, models: Path) -> None:
        self.models = models

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        source = self.models / run_id / path
        if not source.is_dir():
            raise OSError(f"run {run_id} has no artifact {path}")
        target = Path(dst_path) / path
        shutil.copytree(source, target)
        return str(target)


@dataclass
class _FakeTracker:
    """Just what build_study_ensemble reads from a StudyTracker: trial runs and artifacts."""

    client: _FakeClient
    runs: dict[int, str]

    def trial_runs(self) -> dict[int, str]:
        return dict(self.runs)


def _run(spec: StudySpec, paths: StudyPaths, tracker: _FakeTracker, data: Dataset) -> StudyRun:
    """The StudyRun the ensemble command hands the builder (its tracker a stand-in)."""
    study = open_study(spec, paths.storage_url, create=False)
    return StudyRun(
        spec=spec, paths=paths, study=study, tracker=tracker,  # type: ignore[arg-type]
        data=data, trainer_instance=TINY,  # type: ignore[arg-type]
    )  # fmt: skip


def _study_with_models(
    tmp_path: Path, values: dict[int, float], with_model: set[int]
) -> tuple[StudySpec, StudyPaths, _FakeTracker, Dataset, dict[int, nn.Module]]:
    """A real Optuna study of completed trials (val_loss, min) and fake stored models."""
    spec = StudySpec.model_validate(
        base_study(name="ens-study", ensemble={"method": "top_k", "size": 2, "candidates": 5})
    )
    paths = StudyPaths(
        workdir=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'unused-mlflow.db'}",
        storage_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        ray_storage=tmp_path / "ray",
        artifact_location=None,
    )
    study = open_study(spec, paths.storage_url)
    networks: dict[int, nn.Module] = {}
    torch.manual_seed(0)
    for number, value in values.items():
        study.add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[value])
        )
        params = {"hidden": 4 + number}
        networks[number] = TINY.build_network(params, N_FEATURES, N_CLASSES)
        if number in with_model:
            model = tmp_path / "models" / f"run-{number}" / "model"
            model.mkdir(parents=True)
            torch.save(networks[number].state_dict(), model / "state_dict.pt")
            (model / "params.json").write_text(json.dumps({"params": params}))
    tracker = _FakeTracker(_FakeClient(tmp_path / "models"), {n: f"run-{n}" for n in values})
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, size=(90, N_FEATURES)).astype(np.float32)
    y = np.arange(90) % N_CLASSES
    data = Dataset("fake", x[:30], y[:30], x[30:60], y[30:60], x[60:], y[60:], N_CLASSES)
    return spec, paths, tracker, data, networks


def test_best_single_is_the_best_trial_with_a_model_and_a_missing_model_is_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Trial 2 has the best val_loss but no stored model; trial 0 is the best with one.
    spec, paths, tracker, data, networks = _study_with_models(
        tmp_path, {0: 0.30, 1: 0.50, 2: 0.10, 3: 0.40}, with_model={0, 1, 3}
    )
    logged: dict[str, dict] = {}

    def capture(*args: object) -> None:
        # _log_to_parent(tracker, paths, spec, members_dir, data, summary): MLflow, not here.
        logged["manifest"] = read_manifest(args[3])  # type: ignore[arg-type]

    monkeypatch.setattr(study_ensemble, "_log_to_parent", capture)
    monkeypatch.setattr(
        study_ensemble,
        "load_members_dir",
        functools.partial(load_members_dir, resolver=lambda ref: TINY),
    )
    with caplog.at_level(logging.WARNING, logger="searchsvc.ensemble.build"):
        summary = build_study_ensemble(_run(spec, paths, tracker, data))

    assert summary.best_single_trial == 0
    assert summary.to_json()["best_single"]["trial"] == 0
    expected = member_val_probs([networks[0]], data.x_test)[0]
    assert summary.best_single.nll == pytest.approx(log_loss(expected, data.y_test))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "best trial 2 (val_loss=0.1) has no stored model" in warning
    assert "'best single' is trial 0 (val_loss=0.3)" in warning
    # The range of the training and validation features is recorded for prediction.
    low, high = feature_range_of(data.x_train, data.x_val)
    assert logged["manifest"]["feature_range"] == {"min": low, "max": high}
    assert not (tmp_path / "unused-mlflow.db").exists()


def test_best_single_needs_no_warning_when_the_best_trial_has_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spec, paths, tracker, data, _ = _study_with_models(
        tmp_path, {0: 0.30, 1: 0.20}, with_model={0, 1}
    )
    monkeypatch.setattr(study_ensemble, "_log_to_parent", lambda *args: None)
    monkeypatch.setattr(
        study_ensemble,
        "load_members_dir",
        functools.partial(load_members_dir, resolver=lambda ref: TINY),
    )
    with caplog.at_level(logging.WARNING, logger="searchsvc.ensemble.build"):
        summary = build_study_ensemble(_run(spec, paths, tracker, data))
    assert summary.best_single_trial == 1
    assert not [r for r in caplog.records if "best single" in r.getMessage()]


def test_study_without_stored_models_is_a_clear_ensemble_error(tmp_path: Path) -> None:
    spec, paths, tracker, data, _ = _study_with_models(tmp_path, {0: 0.3}, with_model=set())
    with pytest.raises(EnsembleError) as caught:
        build_study_ensemble(_run(spec, paths, tracker, data))
    assert str(caught.value) == (
        "study 'ens-study': none of its 1 completed trials has a stored model that loads "
        "(1 skipped; see the warnings)"
    )


@pytest.mark.parametrize(
    ("scores", "mode", "expected"),
    [
        ([0.3, 0.1, 0.1, 0.5], "min", 1),  # ties go to the earliest
        ([0.3, 0.1, 0.9, 0.9], "max", 2),
        ([None, 0.4, float("nan"), 0.2], "min", 3),  # no score never wins over a score
        ([None, None], "max", 0),
    ],
)
def test_best_single_index_follows_the_objective_mode(
    scores: list[float | None], mode: str, expected: int
) -> None:
    members = [Member(i, 1.0, {}, s) for i, s in enumerate(scores)]
    assert best_single_index(members, mode) == expected


def test_best_single_index_refuses_no_members_and_unknown_modes() -> None:
    with pytest.raises(EnsembleError, match="no candidates"):
        best_single_index([], "min")
    with pytest.raises(EnsembleError, match="'minimize'"):
        best_single_index([Member(0, 1.0, {}, 0.1)], "minimize")


@pytest.mark.parametrize("method", ["greedy", "top_k"])
def test_a_pool_of_one_strong_and_several_poor_trials_registers_nothing_worse_than_the_strong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # Trial 0 is trained on the data; trials 1-4 are random networks made confidently wrong.
    # The objective ranks the poor ones first, as a noisy metric can.
    spec, paths, tracker, data, networks = _study_with_models(
        tmp_path, {0: 0.9, 1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}, with_model={0, 1, 2, 3, 4}
    )
    strong = networks[0]
    optimiser = torch.optim.Adam(strong.parameters(), lr=0.05)
    x, y = torch.tensor(data.x_val), torch.tensor(data.y_val)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(strong(x), y).backward()
        optimiser.step()
    for number, net in networks.items():
        state = {k: v * 25 if number else v for k, v in net.state_dict().items()}
        torch.save(state, tmp_path / "models" / f"run-{number}" / "model" / "state_dict.pt")
    monkeypatch.setattr(study_ensemble, "_log_to_parent", lambda *args: None)
    monkeypatch.setattr(
        study_ensemble, "load_members_dir",
        functools.partial(load_members_dir, resolver=lambda ref: TINY),
    )  # fmt: skip

    summary = build_study_ensemble(
        _run(spec, paths, tracker, data), method=method, size=4, candidates=5
    )

    strong_nll = log_loss(member_val_probs([strong], data.x_val)[0], data.y_val)
    assert summary.val_nll <= strong_nll + 1e-9
    assert 0 in {m.trial for m in summary.members}
    assert summary.to_json()["val_nll_margin"] == summary.best_single_val_nll - summary.val_nll
    assert summary.best_single_trial == 1  # the objective's best: a poor one
    assert summary.val_nll < summary.best_single_val_nll
