"""Reseeds and refits as the worker runs them (Ray-free): how each job ends, which weights it
keeps, what data and options the trainer is given."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from searchsvc.retraining import RetrainJob, refit_data, reseed_seed, retrain
from searchsvc.testing import contract_data
from searchsvc.trainer import BaseTrainer, Dataset, EpochReport, FitOptions, ReportFn


class Recorder(BaseTrainer):
    """Reports ``epochs`` epochs (or max_epochs); weights = the epoch number; best on odd
    epochs unless refit (then every epoch, as the contract asks)."""

    name = "recorder"
    objective_metrics = frozenset({"val_loss"})
    supports_refit = True

    def __init__(self, *, every_epoch_on_refit: bool = True, fail_at: int = 0) -> None:
        self.every_epoch_on_refit, self.fail_at = every_epoch_on_refit, fail_at
        self.seen: list[tuple[FitOptions, int]] = []

    def build_network(self, params: Mapping[str, Any], n_features: int, n_classes: int):
        return torch.nn.Linear(n_features, n_classes)

    def fit(self, params: Mapping[str, Any], data: Dataset, report: ReportFn,
            options: FitOptions) -> None:  # fmt: skip
        self.seen.append((options, len(data.x_train)))
        for epoch in range(1, options.max_epochs + 1):
            if epoch == self.fail_at:
                raise RuntimeError("boom")
            best = epoch % 2 == 1 or (options.refit and self.every_epoch_on_refit)
            state = {"w": torch.full((1,), float(epoch))} if best else None
            report(EpochReport(epoch, {"val_loss": 1.0 / epoch}, best_state=state))


def _job(kind: str = "reseed", epochs: int | None = None) -> RetrainJob:
    return RetrainJob(kind, source=7, index=1 if kind == "reseed" else 0,  # type: ignore[arg-type]
                      params={"lr": 0.1}, seed=reseed_seed(7, 1), epochs=epochs)  # fmt: skip


def test_a_refit_trains_on_train_and_val_for_its_epochs_with_the_studys_schedule() -> None:
    trainer, data = Recorder(), contract_data()
    result = retrain(trainer, _job("refit", epochs=4), refit_data(data), max_epochs=10,
                     deadline=None)  # fmt: skip
    assert (result.status, result.reason, result.best_epoch) == ("finished", "", 4)
    assert float(result.best_state["w"]) == 4.0, "the weights of the epoch it stopped at"
    assert [int(row["epoch"]) for row in result.history] == [1, 2, 3, 4]
    options, n_train = trainer.seen[0]
    assert (options.refit, options.max_epochs, options.seed) == (True, 10, 7 + 1_000_003)
    assert n_train == len(data.x_train) + len(data.x_val)


def test_refit_data_holds_the_validation_split_and_no_test_split() -> None:
    data = contract_data()
    with_test = Dataset("d", data.x_train, data.y_train, data.x_val, data.y_val,
                        data.x_val[:5], data.y_val[:5], data.n_classes)  # fmt: skip
    refit = refit_data(with_test)
    assert (refit.x_test, refit.y_test) == (None, None)
    np.testing.assert_array_equal(refit.x_train, np.concatenate([data.x_train, data.x_val]))
    np.testing.assert_array_equal(refit.y_train, np.concatenate([data.y_train, data.y_val]))


def test_a_reseed_keeps_the_weights_of_its_last_best_epoch() -> None:
    trainer = Recorder()
    result = retrain(trainer, _job(), contract_data(), max_epochs=4, deadline=None)
    assert (result.status, result.best_epoch, float(result.best_state["w"])) == (
        "finished",
        3,
        3.0,
    )
    assert trainer.seen[0][0].refit is False


def test_no_job_starts_once_the_time_budget_ran_out() -> None:
    trainer = Recorder()
    result = retrain(trainer, _job(), contract_data(), max_epochs=4, deadline=time.time() - 1)
    assert (result.status, result.reason) == (
        "not_started",
        "the time budget ran out before it started",
    )
    assert trainer.seen == [], "fit was never called"


def test_a_running_job_stops_at_the_end_of_the_epoch_the_budget_runs_out_in() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0])  # the start, then after epochs 1, 2, 3; the end
    result = retrain(Recorder(), _job(), contract_data(), max_epochs=50, deadline=2.5,
                     clock=lambda: next(ticks))  # fmt: skip
    assert (result.status, result.reason) == (
        "out_of_time",
        "the time budget ran out after epoch 3",
    )
    assert (len(result.history), result.best_epoch, result.seconds) == (3, 3, 4.0)
    assert not result.usable, "a reseed cut by the budget is no candidate"


def test_a_trainer_error_fails_the_job_with_its_first_line() -> None:
    result = retrain(Recorder(fail_at=2), _job(), contract_data(), max_epochs=4, deadline=None)
    assert (result.status, result.reason, len(result.history)) == (
        "failed",
        "RuntimeError: boom",
        1,
    )


def test_a_refit_whose_last_report_has_no_weights_fails_and_says_so() -> None:
    trainer = Recorder(every_epoch_on_refit=False)
    result = retrain(trainer, _job("refit", epochs=4), contract_data(), max_epochs=10,
                     deadline=None)  # fmt: skip
    assert result.status == "failed"
    assert result.reason == (
        "the report of epoch 4 carried no best_state (a refit reports its weights every epoch)"
    )
    assert not result.usable
