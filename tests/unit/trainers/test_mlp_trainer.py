"""Tests of MLPTrainer.fit: the interface contract, divergence, determinism, resume, stopping,
diagnostics and one real MNIST run."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from searchsvc.data.datasets import load_dataset
from searchsvc.trainer import Dataset, EpochReport, FitOptions, Trainer, TrialStopped
from trainers.mlp.diagnostics import capture_activations, layer_stats
from trainers.mlp.epoch import TRAIN_EVAL_SAMPLES, evaluate, train_eval_indices
from trainers.mlp.training import MLPTrainer, trainer

TIME_KEYS = {"epoch_time_s", "train_time_s"}
SMALL = {"n_layers": 2, "width": 32, "diagnostics": False}


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic", seed=0)


class Recorder:
    """A report callback that keeps every report and, like the service, stops the trial by
    raising ``TrialStopped`` in the report of epoch ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.reports: list[EpochReport] = []
        self.stop_after = stop_after

    def __call__(self, rep: EpochReport) -> None:
        self.reports.append(rep)
        if self.stop_after is not None and rep.epoch >= self.stop_after:
            raise TrialStopped

    def curve(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.reports]


@dataclass(frozen=True)
class Fitted:
    """What the service reads from a trial's reports: how it ended and its kept weights."""

    status: str  # completed | diverged | stopped
    best_epoch: int
    best_state: Mapping[str, torch.Tensor] | None


def _fitted(rec: Recorder, stopped: bool) -> Fitted:
    kept = [r for r in rec.reports if r.best_state is not None]
    status = "stopped" if stopped else "completed"
    if rec.reports and rec.reports[-1].diverged:
        status = "diverged"
    return Fitted(status, kept[-1].epoch if kept else 0, kept[-1].best_state if kept else None)


def run(
    data: Dataset,
    params: Mapping[str, Any],
    epochs: int,
    seed: int = 0,
    resume_from: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
) -> tuple[Recorder, Fitted]:
    rec = Recorder(stop_after)
    try:
        trainer.fit(params, data, rec, FitOptions(epochs, seed, resume_from=resume_from))
    except TrialStopped:
        return rec, _fitted(rec, stopped=True)
    return rec, _fitted(rec, stopped=False)


def untimed(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in TIME_KEYS}


def test_module_trainer_satisfies_the_trainer_protocol() -> None:
    assert isinstance(trainer, MLPTrainer) and isinstance(trainer, Trainer)
    assert trainer.name == "mlp"
    for key in ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "train_eval_loss",
                "n_params", "epoch_time_s"):  # fmt: skip
        assert key in trainer.objective_metrics


def test_every_objective_metric_is_reported_and_diagnostics_cover_each_layer(
    synthetic: Dataset,
) -> None:
    rec, _ = run(synthetic, {"n_layers": 3, "width": 16, "activation": "sigmoid"}, 2)
    metrics = rec.reports[-1].metrics
    assert trainer.objective_metrics <= set(metrics)
    for i in (1, 2, 3):
        for prefix in ("act_mean", "act_std", "saturated", "grad_norm"):
            assert math.isfinite(metrics[f"{prefix}_{i}"])
    assert 0.0 <= metrics["saturated_1"] <= 1.0
    assert "dead_1" not in metrics  # sigmoid units are never exactly inactive
    assert metrics["n_params"] == (20 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 10 + 10)


def test_relu_diagnostics_report_dead_units_and_histograms_on_first_and_last_epoch(
    synthetic: Dataset,
) -> None:
    rec, _ = run(synthetic, {"n_layers": 2, "width": 16, "activation": "relu"}, 3)
    assert "dead_2" in rec.reports[0].metrics and "saturated_1" not in rec.reports[0].metrics
    assert 0.0 <= rec.reports[0].metrics["dead_1"] <= 1.0
    assert [sorted(r.files) for r in rec.reports] == [
        ["activations_epoch_001.png"],
        [],
        ["activations_epoch_003.png"],
    ]
    assert rec.reports[0].files["activations_epoch_001.png"].startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("activation", "extra", "can_die"),
    [
        ("relu", {}, True),
        ("leaky_relu", {}, False),
        ("leaky_relu", {"leaky_slope": 0}, True),  # slope 0 computes a relu
        ("prelu", {}, False),
        ("elu", {}, False),
    ],
)
def test_dead_units_are_counted_only_for_activations_that_pass_no_gradient_below_zero(
    activation: str, extra: dict[str, Any], can_die: bool
) -> None:
    params = {"n_layers": 1, "width": 8, "activation": activation, **extra}
    torch.manual_seed(0)
    net = trainer.build_network(params, 4, 3)
    with torch.no_grad():
        net.blocks[0].linear.bias.fill_(-100.0)  # every unit negative on every sample
    x = torch.rand(16, 4)
    metrics = layer_stats(capture_activations(net, x), activation, net)
    # The definition follows the gradient: only a unit that gets none is dead.
    net(x).sum().backward()
    gets_gradient = bool(net.blocks[0].linear.weight.grad.abs().sum() > 0)
    assert gets_gradient is not can_die
    if can_die:
        assert metrics["dead_1"] == 1.0
    else:
        assert not any(k.startswith("dead_") for k in metrics)


def test_leaky_units_report_no_dead_metric_in_a_trial(synthetic: Dataset) -> None:
    rec, _ = run(synthetic, {"n_layers": 2, "width": 16, "activation": "leaky_relu"}, 1)
    metrics = rec.reports[0].metrics
    assert "act_std_2" in metrics and not any(k.startswith("dead_") for k in metrics)


def test_train_accuracy_is_the_eval_mode_accuracy_of_the_epochs_network_on_its_samples(
    synthetic: Dataset,
) -> None:
    # Heavy dropout on 300 samples: with dropout off the network gets nearly all of them
    # right, with it on (what a running average over the minibatches measured) far fewer.
    small = Dataset("small", synthetic.x_train[:300], synthetic.y_train[:300], synthetic.x_val,
                    synthetic.y_val, None, None, synthetic.n_classes)  # fmt: skip
    params = {"n_layers": 1, "width": 512, "dropout": 0.8, "lr": 3e-3, "patience": 0,
              "diagnostics": False}  # fmt: skip
    rec, _ = run(small, params, 30)
    last = rec.reports[-1].metrics
    net = trainer.build_network(params, small.n_features, small.n_classes)
    net.load_state_dict(rec.reports[-1].training_state["model"])
    x, y = torch.from_numpy(small.x_train), torch.from_numpy(small.y_train)
    loss, accuracy = evaluate(net, x, y)
    assert last["train_accuracy"] == accuracy >= 0.95
    assert last["train_eval_loss"] == pytest.approx(loss, rel=1e-6)
    net.train()  # dropout on: what the minibatches saw
    with torch.no_grad():
        dropout_on = float((net(x).argmax(dim=1) == y).float().mean())
    assert dropout_on < accuracy - 0.05
    # train_loss stays the conventional running mean of the dropout-on minibatch loss.
    assert last["train_loss"] > 2 * last["train_eval_loss"]


def test_train_accuracy_of_a_large_training_split_uses_a_fixed_seeded_subset() -> None:
    n = TRAIN_EVAL_SAMPLES + 2000
    rng = np.random.default_rng(0)
    x = rng.random((n, 5), dtype=np.float32)
    y = rng.integers(0, 3, n)
    data = Dataset("large", x, y, x[:100], y[:100], None, None, 3)
    params = {"n_layers": 1, "width": 8, "diagnostics": False}
    rec, _ = run(data, params, 2, seed=5)
    picked = train_eval_indices(n, seed=5)
    assert picked is not None and len(np.unique(picked)) == TRAIN_EVAL_SAMPLES
    assert np.array_equal(picked, np.sort(picked))
    assert np.array_equal(picked, train_eval_indices(n, seed=5))
    assert not np.array_equal(picked, train_eval_indices(n, seed=6))
    assert train_eval_indices(TRAIN_EVAL_SAMPLES, seed=5) is None  # small: all samples
    for rep in rec.reports:  # the same samples every epoch
        net = trainer.build_network(params, 5, 3)
        net.load_state_dict(rep.training_state["model"])
        loss, accuracy = evaluate(net, torch.from_numpy(x[picked]), torch.from_numpy(y[picked]))
        assert rep.metrics["train_accuracy"] == accuracy
        assert rep.metrics["train_eval_loss"] == pytest.approx(loss, rel=1e-6)


def test_maxout_diagnostics_report_dead_pieces(synthetic: Dataset) -> None:
    rec, _ = run(synthetic, {"n_layers": 1, "width": 8, "activation": "maxout"}, 1)
    assert 0.0 <= rec.reports[0].metrics["dead_1"] <= 1.0


def test_diagnostics_off_reports_no_layer_metrics_and_no_files(synthetic: Dataset) -> None:
    rec, _ = run(synthetic, SMALL, 2)
    assert not any(k.startswith(("act_", "dead_", "grad_norm_")) for k in rec.reports[0].metrics)
    assert all(not r.files for r in rec.reports)


def test_huge_learning_rate_diverges_without_raising(synthetic: Dataset) -> None:
    rec, result = run(synthetic, {**SMALL, "optimizer": "sgd", "lr": 1e6}, 10)
    assert result.status == "diverged"
    assert [(r.epoch, r.diverged) for r in rec.reports] == [(1, True)]
    assert not math.isfinite(rec.reports[-1].metrics["train_loss"])


def test_diverging_later_keeps_the_best_earlier_state(synthetic: Dataset) -> None:
    # Step schedule with gamma 1e7 multiplies a sane lr into a diverging one after epoch 2.
    params = {**SMALL, "optimizer": "sgd", "lr": 0.05, "lr_schedule": "step",
              "lr_step_size": 2, "lr_gamma": 1e7}  # fmt: skip
    rec, result = run(synthetic, params, 5)
    assert result.status == "diverged" and [r.epoch for r in rec.reports] == [1, 2, 3]
    assert result.best_epoch == 2 and result.best_state is not None
    assert not rec.reports[1].diverged


def test_same_params_and_seed_give_identical_validation_curves(synthetic: Dataset) -> None:
    params = {**SMALL, "dropout": 0.2, "input_dropout": 0.1}
    a, _ = run(synthetic, params, 3, seed=7)
    b, _ = run(synthetic, params, 3, seed=7)
    c, _ = run(synthetic, params, 3, seed=8)
    assert a.curve("val_loss") == b.curve("val_loss")
    assert a.curve("train_loss") == b.curve("train_loss")
    assert a.curve("val_loss") != c.curve("val_loss")


def test_fit_3_epochs_equals_fit_2_then_resume_for_1(synthetic: Dataset) -> None:
    params = {**SMALL, "dropout": 0.3, "optimizer": "nesterov", "lr": 0.05}
    full, full_result = run(synthetic, params, 3)
    head, _ = run(synthetic, params, 2)
    tail, tail_result = run(synthetic, params, 3, resume_from=head.reports[-1].training_state)
    assert [r.epoch for r in tail.reports] == [3]
    assert untimed(tail.reports[0].metrics) == untimed(full.reports[2].metrics)
    assert (tail_result.status, tail_result.best_epoch) == ("completed", full_result.best_epoch)
    for key, value in full_result.best_state.items():
        assert torch.equal(tail_result.best_state[key], value)


def test_paused_trial_resumes_identically_with_schedule_norm_and_diagnostics(
    synthetic: Dataset,
) -> None:
    # A trial stopped after epoch 2 of 4 and resumed from that epoch's training_state: the
    # cosine schedule (over max_epochs=4), batch-norm statistics, dropout RNG and the
    # early-stopping bookkeeping all carry over.
    params = {"n_layers": 2, "width": 32, "dropout": 0.3, "norm": "batch",
              "lr_schedule": "cosine", "patience": 3}  # fmt: skip
    full, full_result = run(synthetic, params, 4)
    head, head_result = run(synthetic, params, 4, stop_after=2)
    assert head_result.status == "stopped"
    state = head.reports[-1].training_state
    tail, tail_result = run(synthetic, params, 4, resume_from=state)
    assert [r.epoch for r in tail.reports] == [3, 4]
    for whole, resumed in zip(full.reports[2:], tail.reports, strict=True):
        assert untimed(resumed.metrics) == untimed(whole.metrics)
    assert tail_result.best_epoch == full_result.best_epoch
    for key, value in full_result.best_state.items():
        assert torch.equal(tail_result.best_state[key], value)
    # The state handed in is left as it was: resuming from it again gives the same run.
    again, _ = run(synthetic, params, 4, resume_from=state)
    assert again.curve("val_loss") == tail.curve("val_loss")


def test_resuming_from_the_epoch_that_ended_the_run_returns_at_once(
    synthetic: Dataset,
) -> None:
    diverged, _ = run(synthetic, {**SMALL, "optimizer": "sgd", "lr": 1e6}, 5)
    rec, _ = run(synthetic, SMALL, 5, resume_from=diverged.reports[-1].training_state)
    assert rec.reports == []
    # lr 1e-30 leaves the val loss unchanged: patience 1 ends the run at epoch 2.
    plateau = {**SMALL, "optimizer": "sgd", "lr": 1e-30, "patience": 1}
    stopped, first = run(synthetic, plateau, 5)
    assert first.status == "completed" and len(stopped.reports) == 2
    rec, _ = run(synthetic, plateau, 5, resume_from=stopped.reports[-1].training_state)
    assert rec.reports == []


def test_the_services_stop_raised_in_report_ends_fit_at_once(synthetic: Dataset) -> None:
    rec, result = run(synthetic, SMALL, 10, stop_after=2)
    assert len(rec.reports) == 2
    assert result.status == "stopped"
    assert result.best_epoch in (1, 2) and result.best_state is not None


def test_exception_raised_in_report_propagates(synthetic: Dataset) -> None:
    class SchedulerStop(BaseException):
        pass

    def report(rep: EpochReport) -> None:
        raise SchedulerStop

    with pytest.raises(SchedulerStop):
        trainer.fit(SMALL, synthetic, report, FitOptions(max_epochs=3, seed=0))


def test_best_state_is_the_best_epoch_and_loads_into_build_network(synthetic: Dataset) -> None:
    rec, result = run(synthetic, {**SMALL, "lr": 0.01}, 4)
    best = rec.reports[result.best_epoch - 1]
    assert best.best_state is not None
    assert best.metrics["val_loss"] == min(rec.curve("val_loss"))
    assert all(t.device.type == "cpu" for t in result.best_state.values())
    net = trainer.build_network({**SMALL, "lr": 0.01}, synthetic.n_features, synthetic.n_classes)
    net.load_state_dict(result.best_state)
    loss, acc = evaluate(net, torch.from_numpy(synthetic.x_val), torch.from_numpy(synthetic.y_val))
    assert acc == best.metrics["val_accuracy"]
    assert loss == pytest.approx(best.metrics["val_loss"], rel=1e-5)


def test_read_only_arrays_train_without_warnings(synthetic: Dataset) -> None:
    arrays = [synthetic.x_train.copy(), synthetic.y_train.copy(),
              synthetic.x_val.copy(), synthetic.y_val.copy()]  # fmt: skip
    for a in arrays:
        a.setflags(write=False)
    data = Dataset("ro", *arrays, None, None, synthetic.n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, result = run(data, SMALL, 1)
    assert result.status == "completed"


def test_unknown_param_is_rejected_by_fit(synthetic: Dataset) -> None:
    with pytest.raises(ValueError, match="'learning_rate'"):
        run(synthetic, {"learning_rate": 0.1}, 1)


def test_real_mnist_subset_reaches_90_percent_validation_accuracy(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir=data_dir, train_subset=10000, download=False)
    rec, result = run(data.without_test(), {"optimizer": "adam", "diagnostics": False}, 2)
    assert result.status == "completed"
    assert rec.reports[-1].metrics["val_accuracy"] > 0.90
    assert np.isfinite(rec.curve("val_loss")).all()


def test_a_refit_trains_every_epoch_past_its_patience_and_reports_each_epochs_weights() -> None:
    from searchsvc.retraining import refit_data
    from searchsvc.testing import contract_data

    # A learning rate this high makes the validation loss rise, so patience 1 ends a trial.
    params = {"n_layers": 1, "width": 16, "lr": 0.5, "patience": 1, "diagnostics": False}
    data = refit_data(contract_data())
    searched: list[EpochReport] = []
    trainer.fit(params, data, searched.append, FitOptions(max_epochs=8, seed=0))
    assert len(searched) < 8, "the setting must make an ordinary trial stop early"

    refit: list[EpochReport] = []
    trainer.fit(params, data, refit.append, FitOptions(max_epochs=8, seed=0, refit=True))
    assert [r.epoch for r in refit] == list(range(1, 9))
    assert all(r.best_state is not None for r in refit)
    final = refit[-1].best_state
    network = trainer.build_network(params, data.n_features, data.n_classes)
    network.load_state_dict(final)  # the network's state as it stands, loadable


def test_keep_weights_last_keeps_the_final_epoch_although_val_loss_rose_and_patience_counts(
    synthetic: Dataset,
) -> None:
    # A learning rate this high makes the validation loss rise after its first epochs.
    params = {"n_layers": 1, "width": 16, "lr": 0.5, "patience": 0, "diagnostics": False}
    data = synthetic
    rec, best = run(data, params, 6)
    assert best.best_epoch < 6, "the setting must make the validation loss rise"

    rec, last = run(data, {**params, "keep_weights": "last"}, 6)
    assert [r.epoch for r in rec.reports if r.best_state is not None] == [1, 2, 3, 4, 5, 6]
    assert last.best_epoch == 6
    network = trainer.build_network(params, data.n_features, data.n_classes)
    network.load_state_dict(last.best_state)
    loss, _ = evaluate(network, torch.from_numpy(data.x_val), torch.from_numpy(data.y_val))
    assert loss == pytest.approx(rec.reports[-1].metrics["val_loss"], rel=1e-5)

    # Early stopping still counts epochs without a better val_loss, and keeps the last epoch.
    rec, stopped = run(data, {**params, "keep_weights": "LAST", "patience": 1}, 8)
    assert stopped.best_epoch == rec.reports[-1].epoch < 8


def test_keep_weights_other_than_best_or_last_is_rejected_by_name(synthetic: Dataset) -> None:
    with pytest.raises(ValueError) as raised:
        run(synthetic, {**SMALL, "keep_weights": "final"}, 1)
    assert str(raised.value) == "keep_weights: unknown value 'final'; expected one of best, last"
