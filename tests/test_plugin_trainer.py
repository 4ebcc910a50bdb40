"""Tests of the plug-in trainer contract: the example trainer of ``searchsvc.trainer``'s
docstring, taken from the docstring itself, runs through the trial runner of
``searchsvc.trainable`` (without Ray), and ``resume_from`` is passed only to resume."""

from __future__ import annotations

import inspect
import logging
import shutil
import textwrap
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import searchsvc.trainer as trainer_module
from searchsvc.trainable import (
    CHECKPOINT_BEST,
    CHECKPOINT_STATE,
    Resume,
    accepts_resume_from,
    load_checkpoint,
    run_trainer,
)
from searchsvc.trainer import Dataset, EpochReport, FitResult
from trainers.datasets import load_dataset
from trainers.mlp import trainer as mlp_trainer

_EXAMPLE_HEADER = "Writing your own trainer"


def docstring_example() -> str:
    """The code of the docstring's literal block that follows "Writing your own trainer"."""
    lines = (trainer_module.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(_EXAMPLE_HEADER))
    assert lines[start].endswith("::"), "the example must be a literal block"
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("    "):
            break  # the first unindented line ends the literal block
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def load_example() -> Any:
    """Execute the example as the module ``mypkg.trainers`` would be; its ``my_trainer``."""
    module = types.ModuleType("mypkg_trainers")
    exec(compile(docstring_example(), "<searchsvc.trainer example>", "exec"), module.__dict__)
    return module.my_trainer


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
) -> FitResult | None:
    return run_trainer(
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
    result = run(example, synthetic, sent)
    assert sent.epochs == [1, 2, 3]
    assert isinstance(result, FitResult) and result.status == "completed"
    for metrics, folder in sent.results:
        assert set(example.reported_metrics) <= set(metrics)
        assert metrics["node_id"] == "node-under-test"
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
        assert folder is not None and (folder / CHECKPOINT_BEST).exists()
    last, folder = sent.results[-1]
    assert last["best_epoch"] == result.best_epoch >= 1
    net = example.build_network({}, synthetic.n_features, synthetic.n_classes)
    net.load_state_dict(torch.load(folder / CHECKPOINT_BEST, weights_only=True))


def test_example_without_resume_from_asked_to_resume_starts_again_with_a_warning(
    synthetic: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    example = load_example()
    assert not accepts_resume_from(example.fit)  # the documented minimal form
    stale = {"w": torch.zeros(1)}
    resume = Resume(state={"epoch": 2}, best_epoch=2, best_state=stale)
    sent = Sent(tmp_path)
    with caplog.at_level(logging.WARNING, logger="searchsvc.trainable"):
        result = run(example, synthetic, sent, resume=resume)
    assert (
        "takes no resume_from" in caplog.text and "starting it again from epoch 1" in caplog.text
    )
    assert sent.epochs == [1, 2, 3]
    # The abandoned run's best epoch and weights are not carried into the new numbering.
    assert sent.results[0][0]["best_epoch"] == 1
    assert result is not None and result.status == "completed"


class SpyTrainer:
    """Records the keywords ``fit`` gets; reports one epoch."""

    name = "spy"
    reported_metrics = frozenset({"val_loss"})

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def build_network(self, params: Mapping[str, Any], n_features: int, n_classes: int) -> Any:
        return torch.nn.Linear(n_features, n_classes)

    def fit(self, params: Any, data: Any, report: Any, **kwargs: Any) -> FitResult:
        self.calls.append(kwargs)
        report(EpochReport(1, {"val_loss": 1.0}))
        return FitResult("completed")


def test_resume_from_is_passed_only_when_there_is_a_checkpoint(
    synthetic: Dataset, tmp_path: Path
) -> None:
    spy = SpyTrainer()
    run(spy, synthetic, Sent(tmp_path / "a"))
    state = {"epoch": 4, "anything": 1}
    run(spy, synthetic, Sent(tmp_path / "b"), resume=Resume(state, 0, None))
    fresh, resumed = spy.calls
    assert fresh == {"max_epochs": 3, "seed": 0, "device": "cpu"}
    assert resumed["resume_from"] is state


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
    assert load_checkpoint(folder, owner=8) is None  # another trial's checkpoint
    resume = load_checkpoint(folder, owner=7)
    assert resume is not None and resume.best_epoch == head.results[-1][0]["best_epoch"]
    tail = Sent(tmp_path / "tail")
    run(mlp_trainer, synthetic, tail, params=params, epochs=3, resume=resume)
    assert tail.epochs == [3]
    assert tail.results[0][0]["val_loss"] == whole.results[2][0]["val_loss"]
    assert tail.results[0][0]["best_epoch"] == whole.results[2][0]["best_epoch"]


def test_a_best_state_returned_but_never_reported_is_warned_about(
    synthetic: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreported(SpyTrainer):
        def fit(self, params: Any, data: Any, report: Any, **kwargs: Any) -> FitResult:
            report(EpochReport(1, {"val_loss": float("inf")}))
            return FitResult("diverged", 1, {"w": torch.zeros(1)}, "diverged at epoch 1")

    sent = Sent(tmp_path)
    with caplog.at_level(logging.INFO, logger="searchsvc.trainable"):
        run(Unreported(), synthetic, sent)
    assert "trial 7: diverged (diverged at epoch 1)" in caplog.text
    assert "no EpochReport carried" in caplog.text
    assert "has no 'diverged' metric" in caplog.text
    assert sent.results[0] == ({"val_loss": pytest.approx(float("nan"), nan_ok=True),
                                "epoch": 1, "best_epoch": 0,
                                "node_id": "node-under-test"}, None)  # fmt: skip


def test_accepts_resume_from_reads_named_and_var_keyword_parameters() -> None:
    def named(params: Any, *, resume_from: Any = None) -> None: ...
    def var_kw(params: Any, **kwargs: Any) -> None: ...
    def without(params: Any, *, seed: int) -> None: ...

    assert accepts_resume_from(named) and accepts_resume_from(var_kw)
    assert not accepts_resume_from(without)
    assert "resume_from" in inspect.signature(mlp_trainer.fit).parameters
