"""The trial runner's side of the plug-in contract: the example trainer of
``searchsvc.trainer``'s docstring, taken from the docstring itself, runs through the trial
runner of ``searchsvc.execution.trainable`` (without Ray); ``resume_from`` is passed only to a
trainer that supports resume, and only to resume; divergence travels as a report's flag;
checkpoints load as plain data."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from searchsvc.data.datasets import load_dataset
from searchsvc.execution.trainable import (
    CHECKPOINT_BEST,
    CHECKPOINT_STATE,
    DIVERGED,
    Resume,
    load_checkpoint,
    run_trainer,
)
from searchsvc.search.trial_config import RESUMED_AFTER
from searchsvc.trainer import BaseTrainer, Dataset, EpochReport, FitOptions
from tests.helpers import docstring_example, load_example
from trainers.mlp.training import trainer as mlp_trainer


class Sent:
    """A ``send`` that keeps each epoch's metrics and a copy of its checkpoint folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: list[tuple[dict[str, Any], Path | None]] = []

    def __call__(self, metrics: dict[str, Any], folder: Path | None, epoch: int) -> None:
        kept = None
        if folder is not None:  # the folder is temporary: copy it while it exists
            kept = self.root / f"epoch_{epoch:03d}_{len(self.results)}"
            shutil.copytree(folder, kept)
        self.results.append((metrics, kept))

    @property
    def epochs(self) -> list[int]:
        return [m["epoch"] for m, _ in self.results]


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic", seed=0).without_test()


def run(
    trainer: Any,
    data: Dataset,
    sent: Sent,
    *,
    epochs: int = 3,
    params: Mapping[str, Any] | None = None,
    resume: Resume | None = None,
) -> None:
    run_trainer(
        trainer,
        dict(params or {}),
        data,
        sent,
        number=7,
        max_epochs=epochs,
        seed=0,
        device="cpu",
        node_id="node-under-test",
        resume=resume,
    )


def test_docstring_example_is_complete_code_without_placeholders() -> None:
    code = docstring_example()
    compile(code, "<example>", "exec")
    assert "..." not in code  # an Ellipsis placeholder would run, and break at the report
    assert "my_trainer = MyTrainer()" in code


def test_documented_example_trainer_runs_a_trial_through_the_trial_runner(
    synthetic: Dataset, tmp_path: Path
) -> None:
    example = load_example()
    sent = Sent(tmp_path)
    run(example, synthetic, sent)
    assert sent.epochs == [1, 2, 3]
    for metrics, folder in sent.results:
        assert set(example.objective_metrics) <= set(metrics)
        assert metrics["node_id"] == "node-under-test"
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
        assert DIVERGED not in metrics
        assert folder is not None and (folder / CHECKPOINT_BEST).exists()
    last, folder = sent.results[-1]
    assert last["best_epoch"] >= 1
    net = example.build_network({}, synthetic.n_features, synthetic.n_classes)
    net.load_state_dict(torch.load(folder / CHECKPOINT_BEST, weights_only=True))


def test_trainer_without_resume_support_asked_to_resume_starts_again_with_a_warning(
    synthetic: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    example = load_example()
    assert not example.supports_resume  # the documented minimal form
    stale = {"w": torch.zeros(1)}
    resume = Resume(state={"epoch": 2}, best_epoch=2, best_state=stale)
    sent = Sent(tmp_path)
    with caplog.at_level(logging.WARNING, logger="searchsvc.execution.trainable"):
        run(example, synthetic, sent, resume=resume)
    assert caplog.messages == [
        "trial 7: trainer 'my_trainer' does not support resume, so it cannot continue from its "
        "checkpoint (epoch 2); starting it again from epoch 1"
    ]
    assert sent.epochs == [1, 2, 3]
    # The abandoned run's best epoch and weights are not carried into the new numbering.
    assert sent.results[0][0]["best_epoch"] == 1


class SpyTrainer(BaseTrainer):
    """Records the options ``fit`` gets; reports one epoch."""

    name = "spy"
    objective_metrics = frozenset({"val_loss"})
    supports_resume = True

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def build_network(self, params: Mapping[str, Any], n_features: int, n_classes: int) -> Any:
        return torch.nn.Linear(n_features, n_classes)

    def fit(self, params: Any, data: Any, report: Any, options: FitOptions) -> None:
        self.calls.append({"params": params, "options": options})
        report(EpochReport(1, {"val_loss": 1.0}))


def test_resume_from_is_passed_only_when_there_is_a_checkpoint(
    synthetic: Dataset, tmp_path: Path
) -> None:
    spy = SpyTrainer()
    run(spy, synthetic, Sent(tmp_path / "a"), params={"lr": 0.1})
    state = {"epoch": 4, "anything": 1}
    run(spy, synthetic, Sent(tmp_path / "b"), resume=Resume(state, 0, None))
    fresh, resumed = spy.calls
    assert fresh == {"params": {"lr": 0.1}, "options": FitOptions(3, 0, "cpu", None)}
    assert resumed["options"].resume_from is state


def test_a_checkpoint_after_the_last_epoch_starts_the_trial_again_with_a_warning(
    synthetic: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spy = SpyTrainer()
    sent = Sent(tmp_path)
    with caplog.at_level(logging.WARNING, logger="searchsvc.execution.trainable"):
        run(spy, synthetic, sent, resume=Resume({"epoch": 3}, 3, None, epoch=3))
    assert caplog.messages == [
        "trial 7: its checkpoint is after the last epoch (3 of 3), so there is nothing to "
        "continue; starting it again from epoch 1"
    ]
    assert spy.calls[0]["options"].resume_from is None
    assert sent.results[0][0][RESUMED_AFTER] == 0  # the searcher then records a restart


def test_mlp_trial_resumes_from_the_checkpoint_folder_the_runner_wrote(
    synthetic: Dataset, tmp_path: Path
) -> None:
    params = {"n_layers": 1, "width": 16, "diagnostics": False}
    whole = Sent(tmp_path / "whole")
    run(mlp_trainer, synthetic, whole, params=params, epochs=3)
    head = Sent(tmp_path / "head")
    run(mlp_trainer, synthetic, head, params=params, epochs=2)
    folder = head.results[-1][1]
    assert folder is not None and (folder / CHECKPOINT_STATE).exists()
    # Plain data: the service loads the MLP's training state with weights_only=True.
    torch.load(folder / CHECKPOINT_STATE, weights_only=True)
    assert load_checkpoint(folder, owner=8) is None  # another trial's checkpoint
    resume = load_checkpoint(folder, owner=7)
    assert resume is not None and resume.best_epoch == head.results[-1][0]["best_epoch"]
    assert not any(str(k).startswith("_searchsvc") for k in resume.state)
    tail = Sent(tmp_path / "tail")
    run(mlp_trainer, synthetic, tail, params=params, epochs=3, resume=resume)
    assert tail.epochs == [3]
    assert tail.results[0][0]["val_loss"] == whole.results[2][0]["val_loss"]
    assert tail.results[0][0]["best_epoch"] == whole.results[2][0]["best_epoch"]


def test_a_diverged_report_reaches_the_searcher_as_the_diverged_key(
    synthetic: Dataset, tmp_path: Path
) -> None:
    class Diverging(SpyTrainer):
        def fit(self, params: Any, data: Any, report: Any, options: FitOptions) -> None:
            report(EpochReport(1, {"val_loss": float("inf")}, diverged=True))

    sent = Sent(tmp_path)
    run(Diverging(), synthetic, sent)
    assert sent.results == [
        (
            {"val_loss": pytest.approx(float("nan"), nan_ok=True), "epoch": 1, "best_epoch": 0,
             "node_id": "node-under-test", DIVERGED: 1.0, RESUMED_AFTER: 0},
            None,
        )
    ]  # fmt: skip


class Opaque:
    """Not plain data: a training state holding it must not load."""


def test_a_training_state_that_is_not_plain_data_is_refused_on_load(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "thing": Opaque(), "_searchsvc_trial": 7}, tmp_path / CHECKPOINT_STATE)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(tmp_path, owner=7)
