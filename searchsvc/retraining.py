"""Retraining a configuration the search chose, outside the search: reseeds and refits.

A reseed trains a completed trial's params again from a new seed, as a trial would (to
``max_epochs``, the trainer's own early stopping, the weights of its best epoch), for
candidates that differ in their seed as well as their configuration. A refit trains an
ensemble member's params on training + validation data for the member's best epoch count
(``FitOptions.refit``). Neither is an Optuna trial: the sampler's history stays the search's,
and neither counts toward ``n_trials``.

This module is the Ray-free part (the jobs, their results, :func:`retrain`, which calls the
trainer); ``searchsvc.execution.retrain`` runs the jobs on Ray workers, and the stages that
want them are ``searchsvc.ensemble.reseeds`` and ``searchsvc.ensemble.refit``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from searchsvc.errors import first_line
from searchsvc.trainer import Dataset, EpochReport, FitOptions, Trainer, TrialStopped

__all__ = ["NOT_STARTED", "RetrainJob", "RetrainResult", "refit_data", "retrain", "reseed_seed"]

Kind = Literal["reseed", "refit"]
Status = Literal["finished", "out_of_time", "not_started", "failed"]

NOT_STARTED = "the time budget ran out before it started"

RESEED_SEED_STRIDE = 1_000_003
"""A reseed's seed is its trial's seed plus ``index`` times this prime: far from every trial's
seed (the study's seed plus a trial number) in any study of fewer trials."""


def reseed_seed(trial_seed: int, index: int) -> int:
    """The seed of reseed ``index`` (1, 2, ...) of a trial that trained from ``trial_seed``."""
    return int(trial_seed) + RESEED_SEED_STRIDE * int(index)


@dataclass(frozen=True)
class RetrainJob:
    """One configuration to train again.

    Attributes:
        kind: ``reseed`` (a new seed, validation chooses the epoch) or ``refit`` (training +
            validation data, ``epochs`` epochs).
        source: the trial whose params these are.
        index: the reseed's number (1, 2, ...) for that trial; 0 for a refit of the trial's
            own seed.
        params: the trial's params.
        seed: the seed to train from.
        epochs: a refit's epoch count (the member's best epoch); None for a reseed.
        member: which member a refit retrains: ``"<trial>"`` or ``"<trial>-reseed-<k>"``.
    """

    kind: Kind
    source: int
    index: int
    params: Mapping[str, Any]
    seed: int
    epochs: int | None = None
    member: str = ""

    @property
    def label(self) -> str:
        """How messages and MLflow run names call it (``reseed-0007-1``, ``refit-7``)."""
        if self.kind == "reseed":
            return f"reseed-{self.source:04d}-{self.index}"
        return f"refit-{self.member or self.source}"


@dataclass
class RetrainResult:
    """How a job ended.

    Attributes:
        status: ``finished`` (its weights are usable), ``out_of_time`` (the time budget
            stopped it), ``not_started`` (the budget had run out before it began) or
            ``failed`` (``reason`` says why).
        history: every epoch's metrics, in order (non-finite values as NaN).
        best_epoch: the epoch whose weights ``best_state`` holds (0: none).
        seconds: wall time of the job in its worker.
    """

    job: RetrainJob
    status: Status
    reason: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: Mapping[str, Any] | None = field(default=None, repr=False)
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        return self.status == "finished" and self.best_state is not None


def refit_data(data: Dataset) -> Dataset:
    """The data a refit trains on: the training split with the validation split appended
    (its validation split is the same samples, so its validation metrics are in-sample), and
    never a test split."""
    return dataclasses.replace(
        data,
        x_train=np.concatenate([data.x_train, data.x_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
        x_test=None,
        y_test=None,
    )


class _Stop(TrialStopped):
    """The service's stop of a retrain, with why."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def retrain(
    trainer: Trainer,
    job: RetrainJob,
    data: Dataset,
    *,
    max_epochs: int,
    deadline: float | None,
    device: str = "cpu",
    clock: Callable[[], float] = time.time,
) -> RetrainResult:
    """Train ``job`` with ``trainer`` and say how it ended (never raises for the trainer's
    errors: a failed job is a result).

    Args:
        data: a reseed's data (without the test split) or a refit's (:func:`refit_data`).
        max_epochs: the study's; a refit is stopped after ``job.epochs`` of them, so its
            learning-rate schedule is the one its trial followed.
        deadline: wall-clock time (``time.time()``) after which no job starts and a running
            one stops at its epoch's end; None for none.
        clock: what tells the time (``time.time``; the tests give it a clock of their own).
    """
    started = clock()
    if deadline is not None and started >= deadline:
        return RetrainResult(job, "not_started", NOT_STARTED)
    result = RetrainResult(job, "finished")

    def report(epoch_report: EpochReport) -> None:
        metrics = {k: _finite_or_nan(v) for k, v in epoch_report.metrics.items()}
        result.history.append({**metrics, "epoch": float(epoch_report.epoch)})
        if epoch_report.best_state is not None:
            result.best_epoch = epoch_report.epoch
            result.best_state = {k: v.detach().cpu().clone() for k, v in
                                 epoch_report.best_state.items()}  # fmt: skip
        if epoch_report.diverged:
            raise _Stop("failed", f"diverged at epoch {epoch_report.epoch}")
        if job.epochs is not None and epoch_report.epoch >= job.epochs:
            raise _Stop("finished", "")
        if deadline is not None and clock() >= deadline:
            raise _Stop("out_of_time", f"the time budget ran out after epoch {epoch_report.epoch}")

    options = FitOptions(
        max_epochs=max_epochs, seed=job.seed, device=device, refit=job.kind == "refit"
    )
    try:
        trainer.fit(dict(job.params), data, report, options)
    except _Stop as stop:
        result.status, result.reason = stop.status, stop.reason
    except Exception as exc:  # the trainer's own code: the job fails, not the study
        result.status = "failed"
        result.reason = f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
    result.seconds = clock() - started
    if result.status == "finished":
        _check_finished(result)
    return result


def _check_finished(result: RetrainResult) -> None:
    """A finished job must have the weights it is for: a refit those of its last epoch."""
    job, ran = result.job, len(result.history)
    if job.epochs is not None and ran < job.epochs:
        result.status, result.reason = "failed", f"fit ended after {ran} of {job.epochs} epochs"
    elif job.epochs is not None and result.best_epoch != job.epochs:
        result.status = "failed"
        result.reason = (f"the report of epoch {job.epochs} carried no best_state (a refit "
                         "reports its weights every epoch)")  # fmt: skip
    elif result.best_state is None:
        result.status, result.reason = "failed", "no report carried a best_state"


def _finite_or_nan(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan
