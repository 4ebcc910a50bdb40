"""A pytest suite that checks a trainer keeps the searchsvc trainer contract.

A plug-in author subclasses :class:`TrainerContract` and gives it the trainer (the shape of
Optuna's ``optuna/testing/pytest_samplers.py``)::

    # tests/test_my_trainer.py
    import pytest

    from mypkg.trainers import my_trainer
    from searchsvc.testing import TrainerContract


    class TestMyTrainer(TrainerContract):
        @pytest.fixture
        def trainer(self):
            return my_trainer

        @pytest.fixture
        def params(self):  # optional: a small, fast configuration (default: {})
            return {"width": 16}

Each check runs the trainer through the service's own trial runner
(:func:`searchsvc.execution.trainable.run_trainer`, the code a Ray worker runs, without Ray): its
reporter, its checkpoint files (loaded back with ``weights_only=True``) and its stop
exception (:class:`~searchsvc.trainer.TrialStopped`). The checks are also plain functions
(``check_*``), each raising ``AssertionError`` that says what broke.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from searchsvc.execution.trainable import Resume, load_checkpoint, run_trainer
from searchsvc.search.trial_config import RESUMED_AFTER
from searchsvc.trainer import BaseTrainer, Dataset, Trainer, TrialStopped

__all__ = [
    "TrainerContract",
    "Trial",
    "check_best_state_loads",
    "check_objective_metrics_every_epoch",
    "check_refit_reports_weights_every_epoch",
    "check_rejects_unknown_param",
    "check_resume_matches_an_uninterrupted_run",
    "check_same_seed_same_history",
    "check_stop_propagates",
    "contract_data",
    "run_trial",
]

_OWNER = 0  # the trial number the checks' checkpoints belong to


def contract_data(seed: int = 0) -> Dataset:
    """A small learnable 4-class problem (400 training, 100 validation samples, 20 features
    in [0, 1]), generated here so the checks need no data files."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, size=(4, 20))
    y = np.arange(500) % 4
    x = np.clip(centres[y] + rng.normal(0.0, 0.15, size=(500, 20)), 0.0, 1.0)
    x = x.astype(np.float32)
    y = y.astype(np.int64)
    return Dataset("contract", x[:400], y[:400], x[400:], y[400:], None, None, n_classes=4)


@dataclass
class Trial:
    """What the service saw of one run of ``fit``: each epoch's result and checkpoint.

    Attributes:
        results: the metrics dict of every report (the trainer's, plus the service's
            ``epoch``, ``best_epoch``, ``node_id`` and, for a diverged report, ``diverged``).
        best_states: the best weights each report carried, loaded back from its checkpoint.
        resume_points: the resume point of each report's checkpoint (None without a state).
        stopped: the service's stop ended the run.
    """

    results: list[dict[str, Any]] = field(default_factory=list)
    best_states: list[Mapping[str, Any]] = field(default_factory=list)
    resume_points: list[Resume | None] = field(default_factory=list)
    stopped: bool = False

    def history(self) -> list[dict[str, Any]]:
        """Every epoch's metrics without timings (names ending ``time_s``), the node or where the
        trial continued from."""
        return [
            {k: _comparable(v) for k, v in r.items() if not _volatile(k)} for r in self.results
        ]


def run_trial(
    trainer: Trainer,
    params: Mapping[str, Any],
    data: Dataset,
    *,
    max_epochs: int,
    seed: int = 0,
    stop_after: int | None = None,
    resume: Resume | None = None,
) -> Trial:
    """Run one trial of ``trainer`` through the service's trial runner and record it.

    ``stop_after``: the service stops the trial in the report of that epoch (by raising
    ``TrialStopped`` there, as Ray's stop does in a worker).
    """
    import torch

    trial = Trial()

    def send(metrics: dict[str, Any], folder: Path | None, epoch: int) -> None:
        trial.results.append(dict(metrics))
        resume_point = None
        if folder is not None:
            # The folder lives only during this call: load what the service would keep.
            best = folder / "best_state.pt"
            if best.exists() and metrics["best_epoch"] == epoch:
                trial.best_states.append(torch.load(best, weights_only=True))
            resume_point = load_checkpoint(folder, _OWNER)
        trial.resume_points.append(resume_point)
        if stop_after is not None and epoch >= stop_after:
            raise TrialStopped(f"stopped after epoch {epoch}")

    try:
        run_trainer(
            trainer, dict(params), data, send, number=_OWNER, max_epochs=max_epochs, seed=seed,
            device="cpu", node_id="contract", resume=resume,
        )  # fmt: skip
    except TrialStopped:
        trial.stopped = True
    return trial


def check_same_seed_same_history(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """The same params and seed give the same full metric history."""
    first = run_trial(trainer, params, data, max_epochs=max_epochs).history()
    second = run_trial(trainer, params, data, max_epochs=max_epochs).history()
    assert first, "fit reported no epoch"
    for epoch, (a, b) in enumerate(zip(first, second, strict=True), start=1):
        assert a == b, f"epoch {epoch}: the same seed gave different metrics: {a} != {b}"


def check_best_state_loads(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """At least one report carries weights (unless ``has_weights`` is False), and every
    ``best_state`` loads into ``build_network(params, ...)``: the ensemble's rebuild."""
    trial = run_trial(trainer, params, data, max_epochs=max_epochs)
    if not trainer.has_weights:
        assert not trial.best_states, "has_weights is False, yet reports carry best_state"
        return
    assert trial.best_states, "no report carried a best_state (set has_weights = False?)"
    for state in trial.best_states:
        network = trainer.build_network(params, data.n_features, data.n_classes)
        try:
            network.load_state_dict(state, strict=True)
        except Exception as exc:
            raise AssertionError(f"a best_state does not load into build_network: {exc}") from exc


def check_stop_propagates(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """The service's stop, raised in the first report, ends ``fit`` there."""
    trial = run_trial(trainer, params, data, max_epochs=max_epochs, stop_after=1)
    assert trial.stopped, "fit swallowed the service's stop (TrialStopped raised in report)"
    assert len(trial.results) == 1, f"fit reported {len(trial.results)} epochs after the stop"


def check_resume_matches_an_uninterrupted_run(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """Resumed from epoch 1's checkpoint, the trial gives the uninterrupted history."""
    if not trainer.supports_resume:
        pytest.skip("the trainer does not declare supports_resume")
    whole = run_trial(trainer, params, data, max_epochs=max_epochs)
    head = run_trial(trainer, params, data, max_epochs=max_epochs, stop_after=1)
    resume = head.resume_points[-1]
    assert resume is not None, "supports_resume, but the first report has no training_state"
    tail = run_trial(trainer, params, data, max_epochs=max_epochs, resume=resume)
    assert tail.history() == whole.history()[1:], (
        "resumed after epoch 1, the trial's history differs from the uninterrupted run's"
    )


def check_objective_metrics_every_epoch(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """Every objective metric is in every report."""
    trial = run_trial(trainer, params, data, max_epochs=max_epochs)
    for epoch, result in enumerate(trial.results, start=1):
        missing = sorted(set(trainer.objective_metrics) - set(result))
        assert not missing, f"epoch {epoch} reports no {', '.join(missing)}"


def check_refit_reports_weights_every_epoch(
    trainer: Trainer, params: Mapping, data: Dataset, *, max_epochs: int
) -> None:
    """With ``FitOptions.refit`` (training data holding the validation split) every epoch
    runs and every report carries the network's state as ``best_state``."""
    from searchsvc.retraining import refit_data
    from searchsvc.trainer import EpochReport, FitOptions

    if not getattr(trainer, "supports_refit", False):
        pytest.skip("the trainer does not declare supports_refit")
    reports: list[EpochReport] = []
    options = FitOptions(max_epochs=max_epochs, seed=0, refit=True)
    trainer.fit(dict(params), refit_data(data), reports.append, options)
    assert [r.epoch for r in reports] == list(range(1, max_epochs + 1)), (
        f"a refit reported epochs {[r.epoch for r in reports]}, not 1..{max_epochs}"
    )
    missing = [r.epoch for r in reports if r.best_state is None]
    assert not missing, f"a refit's reports of epochs {missing} carry no best_state"


def check_rejects_unknown_param(trainer: Trainer, params: Mapping, unknown: str) -> None:
    """``check_params`` accepts ``params`` and rejects them with an unknown key added."""
    if type(trainer).check_params is BaseTrainer.check_params:
        pytest.skip("the trainer accepts every param (BaseTrainer.check_params)")
    trainer.check_params(params)
    try:
        trainer.check_params({**params, unknown: 1})
    except ValueError as exc:
        assert unknown in str(exc), f"the error does not name the key {unknown!r}: {exc}"
        return
    raise AssertionError(f"check_params accepted the unknown key {unknown!r}")


class TrainerContract:
    """The trainer contract as a pytest suite: subclass it and override ``trainer``.

    Optional overrides: the ``params`` fixture (default ``{}``), the ``data`` fixture
    (default :func:`contract_data`), ``max_epochs`` and ``unknown_param``.
    """

    max_epochs: ClassVar[int] = 3
    unknown_param: ClassVar[str] = "surely_not_a_param"

    @pytest.fixture
    def trainer(self) -> Trainer:
        raise NotImplementedError("override the `trainer` fixture with your trainer")

    @pytest.fixture
    def params(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def data(self) -> Dataset:
        return contract_data()

    def test_same_seed_gives_the_same_history(self, trainer, params, data) -> None:
        check_same_seed_same_history(trainer, params, data, max_epochs=self.max_epochs)

    def test_every_best_state_loads_into_build_network(self, trainer, params, data) -> None:
        check_best_state_loads(trainer, params, data, max_epochs=self.max_epochs)

    def test_the_services_stop_propagates_out_of_fit(self, trainer, params, data) -> None:
        check_stop_propagates(trainer, params, data, max_epochs=self.max_epochs)

    def test_resume_gives_the_uninterrupted_history(self, trainer, params, data) -> None:
        check_resume_matches_an_uninterrupted_run(
            trainer, params, data, max_epochs=self.max_epochs
        )

    def test_every_objective_metric_is_reported_every_epoch(self, trainer, params, data) -> None:
        check_objective_metrics_every_epoch(trainer, params, data, max_epochs=self.max_epochs)

    def test_a_refit_reports_its_weights_every_epoch(self, trainer, params, data) -> None:
        check_refit_reports_weights_every_epoch(trainer, params, data, max_epochs=self.max_epochs)

    def test_check_params_rejects_an_unknown_key(self, trainer, params) -> None:
        check_rejects_unknown_param(trainer, params, self.unknown_param)


def _volatile(key: str) -> bool:
    """Timings and the node differ between two identical runs; where a trial continued from
    is the service's bookkeeping, not the trainer's history."""
    return key.endswith("time_s") or key in ("node_id", RESUMED_AFTER)


def _comparable(value: Any) -> Any:
    """NaN compares equal to NaN here (a diverged epoch is the same in both runs)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
