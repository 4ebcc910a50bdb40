"""The ensemble's candidates: a bad trial is skipped with its reason, the next best takes its
place, and an MLflow outage is told apart from a missing model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import requests
import torch
from torch import nn

from searchsvc import keys
from searchsvc.ensemble.candidates import gather_candidates, trial_sources
from searchsvc.ensemble.summary import SkippedTrial
from searchsvc.errors import TrackingError
from searchsvc.trainer import BaseTrainer, Dataset

N_FEATURES, N_CLASSES = 4, 3


class Tiny(BaseTrainer):
    name = "tiny"
    objective_metrics = frozenset({"val_loss"})

    def fit(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError

    def build_network(self, params: dict, n_features: int, n_classes: int) -> nn.Module:
        if params.get("broken"):
            raise ValueError("this params set cannot be built")
        return nn.Linear(n_features, n_classes)


def _gather(ranked: list, runs: dict, *args: object, **kwargs: object) -> tuple:
    return gather_candidates(trial_sources(ranked, runs), *args, **kwargs)


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, size=(30, N_FEATURES)).astype(np.float32)
    y = np.arange(30) % N_CLASSES
    return Dataset("fake", x, y, x, y, None, None, N_CLASSES)


def _ranked(n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study()
    for value in range(n):
        study.add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[value])
        )
    return study.get_trials()


def _store(models: Path, number: int, params: dict, state: dict | None = None) -> Path:
    """A trial's ``model/`` folder as the tracker stores it."""
    folder = models / f"run-{number}" / "model"
    folder.mkdir(parents=True)
    torch.manual_seed(number)
    state = state if state is not None else nn.Linear(N_FEATURES, N_CLASSES).state_dict()
    torch.save(state, folder / "state_dict.pt")
    (folder / "params.json").write_text(json.dumps({"params": params, "seed": number}))
    return folder


def _download_from(models: Path):
    def download(run_id: str, folder: Path) -> Path:
        source = models / run_id / "model"
        if not source.is_dir():
            raise OSError(f"run {run_id} has no artifact model")
        target = folder / "model"
        shutil.copytree(source, target)
        return target

    return download


def test_bad_trials_are_skipped_with_their_reason_and_the_next_best_take_their_place(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    truncated = _store(models, 0, {})
    (truncated / "state_dict.pt").write_bytes((truncated / "state_dict.pt").read_bytes()[:100])
    (_store(models, 1, {}) / "params.json").unlink()
    nan_weights = {"weight": torch.full((N_CLASSES, N_FEATURES), float("nan")),
                   "bias": torch.zeros(N_CLASSES)}  # fmt: skip
    _store(models, 2, {}, nan_weights)
    _store(models, 3, {"broken": True})
    _store(models, 4, {})  # trial 5 has no stored model; trials 6 and 7 are good
    _store(models, 6, {})
    _store(models, 7, {})
    runs = {n: f"run-{n}" for n in range(8) if n != 4}  # trial 4 has no MLflow run
    work = tmp_path / "work"
    work.mkdir()

    pool, skipped = _gather(
        _ranked(8), runs, _download_from(models), Tiny(), _data(), work, limit=2
    )

    assert [c.member.trial_number for c in pool] == [6, 7]
    assert [c.member.seed for c in pool] == [6, 7]
    assert all(np.isfinite(c.val_probs).all() and c.val_probs.shape == (30, 3) for c in pool)
    assert [s.trial for s in skipped] == [0, 1, 2, 3, 4, 5]
    reasons = {s.trial: s.reason for s in skipped}
    assert reasons[0].startswith("state_dict.pt unreadable: RuntimeError: PytorchStreamReader")
    assert reasons[1].startswith("params.json unreadable: FileNotFoundError: ")
    assert skipped[2:] == [
        SkippedTrial(2, "its validation probabilities are not finite"),
        SkippedTrial(3, "EnsembleError: its network: build_network failed: ValueError: this "
                        "params set cannot be built"),
        SkippedTrial(4, "it has no MLflow run"),
        SkippedTrial(5, "it has no stored model (OSError: run run-5 has no artifact model)"),
    ]  # fmt: skip


def test_the_pool_stops_at_the_limit_without_reading_the_rest(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _store(models, 0, {})
    _store(models, 1, {})
    work = tmp_path / "work"
    work.mkdir()
    pool, skipped = _gather(
        _ranked(3), {0: "run-0", 1: "run-1", 2: "run-2"}, _download_from(models), Tiny(),
        _data(), work, limit=2,
    )  # fmt: skip
    assert ([c.member.trial_number for c in pool], skipped) == ([0, 1], [])


def test_an_unreachable_tracking_server_is_an_outage_not_a_missing_model(tmp_path: Path) -> None:
    def down(run_id: str, folder: Path) -> Path:
        raise requests.exceptions.ConnectionError("Connection refused")

    with pytest.raises(TrackingError) as caught:
        _gather(_ranked(2), {0: "run-0", 1: "run-1"}, down, Tiny(), _data(),
                          tmp_path, limit=2)  # fmt: skip
    assert str(caught.value) == "tracking server unreachable: ConnectionError: Connection refused"


def test_a_trial_whose_weights_are_missing_is_skipped_with_one_warning_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    for number in range(3):
        _store(models, number, {})  # trial 0's files exist: its attribute alone rules it out
    study = optuna.create_study()
    weights = ["missing: upload failed: MlflowException: read-only store", "stored", None]
    for value, attr in enumerate(weights):
        attrs = {} if attr is None else {keys.WEIGHTS: attr}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[value], user_attrs=attrs
        ))  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    with caplog.at_level("WARNING", logger="searchsvc.ensemble.candidates"):
        pool, skipped = _gather(
            study.get_trials(), {n: f"run-{n}" for n in range(3)}, _download_from(models),
            Tiny(), _data(), work, limit=2,
        )  # fmt: skip
    assert [c.member.trial_number for c in pool] == [1, 2]
    assert skipped == [SkippedTrial(0, weights[0])]
    warned = [r.getMessage() for r in caplog.records if r.name == "searchsvc.ensemble.candidates"]
    assert warned == [
        "trial 0 is not an ensemble candidate: missing: upload failed: MlflowException: "
        "read-only store"
    ]
    assert not (work / "trial_0").exists(), "nothing downloaded for it"
