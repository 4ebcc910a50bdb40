"""The trainer interface: where the search service meets the training code.

A trainer knows nothing of Ray, Optuna or MLflow. It receives a trial's params and the
data, trains, reports once per epoch through a callback, and returns its best state. The
service turns those reports into Ray results, Optuna intermediate values and MLflow
metrics; the trainer never sees any of that.

Writing your own trainer::

    # mypkg/trainers.py
    from searchsvc.trainer import Dataset, EpochReport, FitResult, ReportFn

    class MyTrainer:
        name = "my_trainer"
        reported_metrics = frozenset({"train_loss", "val_loss", "val_accuracy"})

        def fit(self, params, data, report, *, max_epochs, seed, device="cpu"):
            ...
            for epoch in range(1, max_epochs + 1):
                ...
                if not report(EpochReport(epoch=epoch, metrics={...}, best_state=...)):
                    break            # the service asked us to stop
            return FitResult(status="completed", best_epoch=..., best_state=...)

        def build_network(self, params, n_features, n_classes):
            return MyNet(...)        # a torch.nn.Module; best_state loads into it

    my_trainer = MyTrainer()

and name it in the study file as ``trainer: mypkg.trainers:my_trainer``.

This module imports only the standard library and numpy, so the CLI stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "Dataset",
    "EpochReport",
    "FitResult",
    "ReportFn",
    "Trainer",
    "TrialStatus",
]


@dataclass(frozen=True)
class Dataset:
    """A classification data set held in memory, already split.

    Features are float32 arrays of shape ``(n, n_features)`` (images flattened, scaled to
    [0, 1] where the source is pixels); labels are int64 arrays with values 0..n_classes-1.
    Trials receive a copy with ``x_test``/``y_test`` set to ``None``: the test split only
    reports, and only the service evaluates it, on the final models.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None  # e.g. (28, 28) for MNIST; None for tabular data

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def without_test(self) -> Dataset:
        """The same data without the test split: what a trial is given."""
        return Dataset(
            name=self.name,
            x_train=self.x_train,
            y_train=self.y_train,
            x_val=self.x_val,
            y_val=self.y_val,
            x_test=None,
            y_test=None,
            n_classes=self.n_classes,
            class_names=self.class_names,
            image_shape=self.image_shape,
        )


@dataclass(frozen=True)
class EpochReport:
    """What a trainer reports at the end of one epoch.

    Attributes:
        epoch: 1-based epoch number; exactly one report per epoch, in order.
        metrics: finite or non-finite floats keyed by name (``train_loss``, ``val_loss``,
            ``val_accuracy``, ``epoch_time_s``, diagnostics ...). The study objective must be
            one of them.
        best_state: the network's ``state_dict`` when this epoch is the best so far (the
            weights the service keeps for the ensemble), else ``None``.
        training_state: everything needed to resume training after this epoch (network,
            optimiser, scheduler, early-stopping bookkeeping, RNG), or ``None`` if the trainer
            cannot resume. Passed back as ``fit(resume_from=...)`` after a worker failure or a
            paused trial.
        files: artefacts produced this epoch, file name -> bytes (e.g. a PNG of activation
            histograms). The service stores them with the trial.
    """

    epoch: int
    metrics: Mapping[str, float]
    best_state: Mapping[str, Any] | None = None
    training_state: Mapping[str, Any] | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


ReportFn = Callable[[EpochReport], bool]
"""The callback a trainer calls once per epoch. It returns ``False`` when training must stop
now (the trainer then returns its result at once). The service's early-stopping scheduler may
also end the trial inside this call by raising an exception that the trainer must not catch."""

TrialStatus = Literal["completed", "diverged", "stopped"]


@dataclass(frozen=True)
class FitResult:
    """What ``Trainer.fit`` returns.

    Attributes:
        status: ``completed`` (ran to max_epochs or stopped by its own patience),
            ``diverged`` (a NaN/inf loss ended it), ``stopped`` (the report callback said stop).
        best_epoch: the epoch whose weights are ``best_state`` (0 if none).
        best_state: the best epoch's ``state_dict`` (by validation loss), or None.
        reason: a short human reason, e.g. ``diverged at epoch 3`` or
            ``early stopping: no val_loss improvement for 5 epochs``.
    """

    status: TrialStatus
    best_epoch: int = 0
    best_state: Mapping[str, Any] | None = None
    reason: str = ""


@runtime_checkable
class Trainer(Protocol):
    """A training recipe the service can search over and ensemble.

    ``fit`` is called once per trial inside a worker process; ``build_network`` is called by
    the ensemble to rebuild a trial's network from its params before loading ``best_state``.
    """

    name: ClassVar[str] | str
    reported_metrics: ClassVar[frozenset[str]] | frozenset[str]

    def fit(
        self,
        params: Mapping[str, Any],
        data: Dataset,
        report: ReportFn,
        *,
        max_epochs: int,
        seed: int,
        device: str = "cpu",
        resume_from: Mapping[str, Any] | None = None,
    ) -> FitResult:
        """Train one network with ``params`` on ``data``, reporting once per epoch."""
        ...

    def build_network(
        self, params: Mapping[str, Any], n_features: int, n_classes: int
    ) -> torch.nn.Module:
        """The untrained network for ``params``; its ``forward`` returns class logits."""
        ...
