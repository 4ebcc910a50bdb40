"""The trainer interface: where the search service meets the training code.

A trainer knows nothing of Ray, Optuna or MLflow. It receives a trial's params and the
data, trains, and reports once per epoch through a callback: the epoch's metrics, the
network's weights when the epoch is the best so far and, optionally, a state to resume from
and files. The service turns those reports into Ray results and checkpoints, Optuna
intermediate values and MLflow metrics and models; the trainer never sees any of that.

Writing your own trainer (complete: it runs as it stands)::

    # mypkg/trainers.py
    import torch
    import torch.nn.functional as F
    from torch import nn

    from searchsvc.trainer import EpochReport, FitResult


    class MyTrainer:
        name = "my_trainer"
        reported_metrics = frozenset({"train_loss", "val_loss", "val_accuracy"})

        def build_network(self, params, n_features, n_classes):
            width = int(params.get("width", 64))
            return nn.Sequential(
                nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_classes)
            )

        def fit(self, params, data, report, *, max_epochs, seed, device="cpu"):
            torch.manual_seed(seed)
            net = self.build_network(params, data.n_features, data.n_classes).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=float(params.get("lr", 1e-3)))
            x = torch.tensor(data.x_train, device=device)
            y = torch.tensor(data.y_train, device=device)
            xv = torch.tensor(data.x_val, device=device)
            yv = torch.tensor(data.y_val, device=device)
            best_loss, best_epoch, best_state = float("inf"), 0, None
            for epoch in range(1, max_epochs + 1):
                net.train()
                for idx in torch.randperm(len(x), device=device).split(128):
                    loss = F.cross_entropy(net(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                net.eval()
                with torch.no_grad():
                    logits = net(xv)
                    metrics = {
                        "train_loss": F.cross_entropy(net(x), y).item(),
                        "val_loss": F.cross_entropy(logits, yv).item(),
                        "val_accuracy": (logits.argmax(1) == yv).float().mean().item(),
                    }
                improved = metrics["val_loss"] < best_loss
                if improved:
                    best_loss, best_epoch = metrics["val_loss"], epoch
                    best_state = {k: v.cpu().clone() for k, v in net.state_dict().items()}
                if not report(EpochReport(epoch, metrics, best_state if improved else None)):
                    return FitResult("stopped", best_epoch, best_state)  # the service said stop
            return FitResult("completed", best_epoch, best_state)


    my_trainer = MyTrainer()

and name it in the study file as ``trainer: mypkg.trainers:my_trainer``.

The contract, as the service uses it:

- ``fit(params, data, report, *, max_epochs, seed, device="cpu")``; ``device`` is ``"cpu"``
  or ``"cuda:0"``. Optionally also ``resume_from=None``: a trainer that takes it and puts a
  ``training_state`` in its reports gets the latest one back as ``resume_from`` when a trial
  is continued from its checkpoint (a retried worker, a paused trial, a trial a dead driver
  left unfinished) and must go on from the epoch after it. The keyword is passed only then,
  so a trainer without it (like the one above) works; asked to resume, it is started again
  from epoch 1, with a warning in the log.
- ``report`` once per epoch, in order. It returns ``False`` when training must stop (return
  at once); the early-stopping scheduler may also end the trial by raising inside it: let
  that propagate.
- What the service keeps comes from the reports only: the weights are the ``best_state`` of
  the latest report that carried one, and that report's epoch is the trial's best epoch; an
  epoch whose loss blew up should report ``diverged: 1.0`` among its metrics, which records
  the trial as diverged. The study's objective must be one of ``reported_metrics`` (checked
  before the study starts).
- The returned :class:`FitResult` is logged by the worker (status and reason, with a warning
  where it contradicts the reports: weights no report carried, a divergence no report
  flagged); it is also the result for direct callers such as tests and benchmarks. The
  service takes nothing else from it.

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
            weights the service keeps for the ensemble), else ``None``. The service keeps
            the latest one reported; a ``FitResult.best_state`` alone is not kept.
        training_state: everything needed to resume training after this epoch (network,
            optimiser, scheduler, early-stopping bookkeeping, RNG), or ``None`` if the trainer
            cannot resume. Passed back as ``fit(resume_from=...)`` when the trial continues
            from its checkpoint (a worker failure, a paused trial, a dead driver), and only
            to a trainer whose ``fit`` takes ``resume_from``.
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
    """What ``Trainer.fit`` returns: a summary for the log and for direct callers.

    The service records a trial from its reports (weights, best epoch, divergence), not from
    this; its worker logs ``status`` and ``reason`` and warns if ``best_state`` was never
    reported.

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
        """Train one network with ``params`` on ``data``, reporting once per epoch.

        ``resume_from`` is optional in implementations: the service passes it only to
        continue a trial from a report's ``training_state``, and starts a trainer whose
        ``fit`` lacks it from scratch instead.
        """
        ...

    def build_network(
        self, params: Mapping[str, Any], n_features: int, n_classes: int
    ) -> torch.nn.Module:
        """The untrained network for ``params``; its ``forward`` returns class logits."""
        ...
