"""The trainer contract suite (``searchsvc.testing``) over every trainer the project ships,
and against trainers with a planted defect: each check must catch its defect."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

from searchsvc.testing import (
    TrainerContract,
    check_best_state_loads,
    check_objective_metrics_every_epoch,
    check_refit_reports_weights_every_epoch,
    check_rejects_unknown_param,
    check_resume_matches_an_uninterrupted_run,
    check_same_seed_same_history,
    check_stop_propagates,
    contract_data,
)
from searchsvc.trainer import BaseTrainer, EpochReport
from tests.fault_trainers import KillOnceTrainer
from tests.helpers import load_example
from tests.step_trainer import StepTrainer
from trainers.mlp.training import trainer as mlp_trainer
from trainers.noop import trainer as noop_trainer


class TestMLP(TrainerContract):
    @pytest.fixture
    def trainer(self):
        return mlp_trainer

    @pytest.fixture
    def params(self):
        return {"n_layers": 2, "width": 16, "dropout": 0.2, "norm": "batch", "diagnostics": True}


class TestNoop(TrainerContract):
    @pytest.fixture
    def trainer(self):
        return noop_trainer

    @pytest.fixture
    def params(self):
        return {"lr": 0.01, "x1": 0.5}


class TestDocstringExample(TrainerContract):
    @pytest.fixture
    def trainer(self):
        return load_example()


class TestKillOnceDisarmed(TrainerContract):
    """The fault-injection trainer with no marker: it never kills its worker."""

    @pytest.fixture
    def trainer(self):
        return KillOnceTrainer()

    @pytest.fixture
    def params(self):
        return {"lr": 0.01, "sleep_s": 0.0}


class TestStepTrainer(TrainerContract):
    """The plug-in trainer the lifecycle tests copy beside their study files."""

    @pytest.fixture
    def trainer(self):
        return StepTrainer()

    @pytest.fixture
    def params(self):
        return {"lr": 0.1}


# --------------------------------------------------------------------------- planted defects


class _Sound(BaseTrainer):
    """A correct little trainer; each defect below breaks one thing of it."""

    name = "sound"
    objective_metrics = frozenset({"val_loss"})
    supports_resume = True
    supports_refit = True  # it reports its weights every epoch and never stops early

    def check_params(self, params: Mapping[str, Any]) -> None:
        unknown = set(params) - {"lr"}
        if unknown:
            raise ValueError(f"unknown params: {', '.join(sorted(unknown))}")

    def build_network(self, params, n_features, n_classes):
        return nn.Linear(n_features, n_classes)

    def fit(self, params, data, report, options):
        torch.manual_seed(options.seed)
        net = self.build_network(params, data.n_features, data.n_classes)
        opt = torch.optim.SGD(net.parameters(), lr=float(params.get("lr", 0.1)))
        start = 0
        resume_from = options.resume_from
        if resume_from is not None:
            net.load_state_dict(resume_from["net"])
            opt.load_state_dict(resume_from["opt"])
            start = int(resume_from["epoch"])
        x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
        for epoch in range(start + 1, options.max_epochs + 1):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = {"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch}
            self.emit(report, EpochReport(epoch, {"val_loss": loss.item() + self.noise()},
                                          self.weights(net), training_state=state))  # fmt: skip

    def emit(self, report, epoch_report: EpochReport) -> None:
        report(epoch_report)

    def weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in net.state_dict().items()}

    def noise(self) -> float:
        return 0.0


class _UnseededCurves(_Sound):
    def noise(self) -> float:
        return random.random()  # not derived from the seed: another curve every run


class _WrongShapedWeights(_Sound):
    def weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        return {"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}


class _SwallowedStop(_Sound):
    def emit(self, report, epoch_report: EpochReport) -> None:
        try:
            report(epoch_report)
        except BaseException:  # the defect: the service's stop is caught and training goes on
            pass


class _ForgetfulResume(_Sound):
    def fit(self, params, data, report, options):
        if options.resume_from is not None:  # the defect: it keeps the epoch, not the weights
            fresh = self.build_network(params, data.n_features, data.n_classes).state_dict()
            options = replace(options, resume_from={**options.resume_from, "net": fresh})
        super().fit(params, data, report, options)


class _RefitStopsEarly(_Sound):
    def fit(self, params, data, report, options):
        if options.refit:  # the defect: its own early stopping still ends a refit
            options = replace(options, max_epochs=1)
        super().fit(params, data, report, options)


class _RefitKeepsOnlyTheFirstWeights(_Sound):
    def emit(self, report, epoch_report: EpochReport) -> None:
        if epoch_report.epoch > 1:  # the defect: later epochs "did not improve", no weights
            epoch_report = replace(epoch_report, best_state=None)
        report(epoch_report)


class _MissingObjective(_Sound):
    objective_metrics = frozenset({"val_loss", "val_accuracy"})


class _AcceptsAnything(_Sound):
    def check_params(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params, Mapping):
            raise ValueError("params must be a mapping")


DATA = contract_data()


def test_the_sound_trainer_passes_every_check() -> None:
    for check in (
        check_same_seed_same_history,
        check_best_state_loads,
        check_stop_propagates,
        check_resume_matches_an_uninterrupted_run,
        check_objective_metrics_every_epoch,
        check_refit_reports_weights_every_epoch,
    ):
        check(_Sound(), {"lr": 0.1}, DATA, max_epochs=3)  # fmt: skip
    check_rejects_unknown_param(_Sound(), {"lr": 0.1}, "lerning_rate")


def test_different_curves_for_one_seed_fail_the_seed_check() -> None:
    with pytest.raises(AssertionError, match="epoch 1: the same seed gave different metrics"):
        check_same_seed_same_history(_UnseededCurves(), {}, DATA, max_epochs=3)


def test_a_best_state_that_does_not_load_fails_the_weights_check() -> None:
    with pytest.raises(AssertionError, match="a best_state does not load into build_network"):
        check_best_state_loads(_WrongShapedWeights(), {}, DATA, max_epochs=3)


def test_a_swallowed_stop_fails_the_stop_check() -> None:
    with pytest.raises(AssertionError, match=r"fit swallowed the service's stop"):
        check_stop_propagates(_SwallowedStop(), {}, DATA, max_epochs=3)


def test_a_resume_that_does_not_continue_fails_the_resume_check() -> None:
    with pytest.raises(AssertionError, match="resumed after epoch 1, the trial's history differs"):
        check_resume_matches_an_uninterrupted_run(_ForgetfulResume(), {}, DATA, max_epochs=3)


def test_a_refit_that_stops_early_fails_the_refit_check() -> None:
    with pytest.raises(AssertionError, match=r"^a refit reported epochs \[1\], not 1..3$"):
        check_refit_reports_weights_every_epoch(_RefitStopsEarly(), {}, DATA, max_epochs=3)


def test_a_refit_without_weights_every_epoch_fails_the_refit_check() -> None:
    with pytest.raises(
        AssertionError, match=r"^a refit's reports of epochs \[2, 3\] carry no best_state$"
    ):
        check_refit_reports_weights_every_epoch(
            _RefitKeepsOnlyTheFirstWeights(), {}, DATA, max_epochs=3
        )


def test_an_objective_metric_never_reported_fails_the_metrics_check() -> None:
    with pytest.raises(AssertionError, match="^epoch 1 reports no val_accuracy$"):
        check_objective_metrics_every_epoch(_MissingObjective(), {}, DATA, max_epochs=2)


def test_check_params_that_accepts_an_unknown_key_fails_the_params_check() -> None:
    with pytest.raises(AssertionError, match="^check_params accepted the unknown key 'lerning'$"):
        check_rejects_unknown_param(_AcceptsAnything(), {"lr": 0.1}, "lerning")
