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

    from searchsvc.trainer import BaseTrainer, EpochReport


    class MyTrainer(BaseTrainer):
        name = "my_trainer"
        objective_metrics = frozenset({"train_loss", "val_loss", "val_accuracy"})

        def build_network(self, params, n_features, n_classes):
            width = int(params.get("width", 64))
            return nn.Sequential(
                nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_classes)
            )

        def fit(self, params, data, report, options):
            device = options.device
            torch.manual_seed(options.seed)
            net = self.build_network(params, data.n_features, data.n_classes).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=float(params.get("lr", 1e-3)))
            x = torch.tensor(data.x_train, device=device)
            y = torch.tensor(data.y_train, device=device)
            xv = torch.tensor(data.x_val, device=device)
            yv = torch.tensor(data.y_val, device=device)
            best_loss = float("inf")
            for epoch in range(1, options.max_epochs + 1):
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
                best_state = None
                if metrics["val_loss"] < best_loss:
                    best_loss = metrics["val_loss"]
                    best_state = {k: v.cpu().clone() for k, v in net.state_dict().items()}
                report(EpochReport(epoch, metrics, best_state))


    my_trainer = MyTrainer()

and name it in the study file as ``trainer: mypkg.trainers:my_trainer`` (or put the module
beside the study file and write ``trainer: trainers:my_trainer``).

The contract, one channel for each thing:

- ``fit(params, data, report, options)`` trains one trial. ``params`` are the trial's
  hyperparameters only; ``options`` (a :class:`FitOptions`) says how many epochs at most, from
  which seed, on which device (``"cpu"`` or ``"cuda:0"``) and from which state to resume. It
  returns nothing: the service reads everything from the reports.
- ``report(EpochReport(...))`` once per epoch, in order; it returns nothing. **Stopping**: when
  the service stops a trial (a scheduler's early stop), ``report`` raises
  :class:`TrialStopped`; let it propagate (it is a ``BaseException``, so ``except Exception``
  does not catch it).
- **Weights**: the ``best_state`` of the latest report that carried one; that report's epoch
  is the trial's best epoch. A trainer with no weights to keep sets ``has_weights = False``.
- **Divergence**: a report with ``diverged=True`` (the loss blew up) is the trial's last: the
  trial is recorded as diverged (pruned) and ``fit`` should return after it.
- **Resume**: a trainer that sets ``supports_resume = True`` and puts a ``training_state`` in
  its reports gets the latest one back as ``options.resume_from`` when a trial continues from its
  checkpoint (a retried worker, a paused trial, a trial a dead driver left unfinished), and
  goes on from the epoch after it. A ``training_state`` is plain data (tensors, numbers,
  strings, lists, dicts): it must load with ``torch.load(..., weights_only=True)``.
- **Refit**: a trainer that sets ``supports_refit = True`` can be retrained on training +
  validation data after the search (``ensemble: {refit: true}``). It is then given
  ``options.refit = True`` and data whose training split holds the validation split too:
  there is nothing left to choose on, so it trains on with no early stopping of its own and
  puts the network's current state in every report's ``best_state``. The service stops it
  (``TrialStopped``) after the member's best epoch count.
- ``objective_metrics``: the metrics a study may optimise; each is reported every epoch
  (checked before the study starts). Reports may carry any other metrics too.
- ``check_params(params)`` raises ``ValueError`` naming an unknown key or a bad value, so
  ``searchsvc validate`` catches typos before anything runs.

Subclass :class:`BaseTrainer` for the defaults of the optional parts (no resume, weights kept,
every param accepted), or write a class with every attribute of :class:`Trainer`.
``searchsvc.testing.TrainerContract`` is a pytest suite that checks a trainer keeps this
contract.

This module imports only the standard library and numpy, so the CLI stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "BaseTrainer",
    "Dataset",
    "EpochReport",
    "FitOptions",
    "ReportFn",
    "Trainer",
    "TrialStopped",
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
class FitOptions:
    """How one trial trains: the service's side of ``fit``, in one value.

    One record rather than keyword arguments so that the service can add a field without
    breaking the trainers written against this contract.

    Attributes:
        max_epochs: the most epochs to train (the trial may stop earlier on its own).
        seed: the trial's seed; the same params, data and seed give the same history on CPU.
        device: ``"cpu"`` or a CUDA device such as ``"cuda:0"``.
        resume_from: the ``training_state`` of the epoch to continue after, given only to a
            trainer with ``supports_resume`` when the trial continues from a checkpoint.
        refit: a refit (given only to a trainer with ``supports_refit``): the training split
            holds the validation split too, so no early stopping on it, and every report's
            ``best_state`` is the network's current state.
    """

    max_epochs: int
    seed: int
    device: str = "cpu"
    resume_from: Mapping[str, Any] | None = None
    refit: bool = False


@dataclass(frozen=True)
class EpochReport:
    """What a trainer reports at the end of one epoch.

    Attributes:
        epoch: 1-based epoch number; exactly one report per epoch, in order.
        metrics: finite or non-finite floats keyed by name (``train_loss``, ``val_loss``,
            ``val_accuracy``, ``epoch_time_s``, diagnostics ...). Every objective metric is
            among them.
        best_state: the network's ``state_dict`` when this epoch is the best so far (the
            weights the service keeps for the ensemble), else ``None``. The latest one
            reported is kept.
        training_state: everything needed to resume training after this epoch (network,
            optimiser, scheduler, early-stopping bookkeeping, RNG) as plain data that loads
            with ``torch.load(..., weights_only=True)``, or ``None``. Passed back as
            ``FitOptions.resume_from`` to a trainer with ``supports_resume``.
        files: artefacts produced this epoch, file name -> bytes (e.g. a PNG of activation
            histograms). The service stores them with the trial.
        diverged: the loss blew up (NaN/inf): this is the trial's last report, and the trial
            is recorded as diverged.
    """

    epoch: int
    metrics: Mapping[str, float]
    best_state: Mapping[str, Any] | None = None
    training_state: Mapping[str, Any] | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    diverged: bool = False


ReportFn = Callable[[EpochReport], None]
"""The callback a trainer calls once per epoch. When the service stops the trial it raises
:class:`TrialStopped`, which the trainer lets propagate."""


class TrialStopped(BaseException):
    """Raised inside ``report`` when the service stops a trial early; never catch it.

    A ``BaseException`` (as ``KeyboardInterrupt`` is), so a trainer's ``except Exception``
    around its training step does not swallow the stop.
    """


@runtime_checkable
class Trainer(Protocol):
    """A training recipe the service can search over and ensemble.

    ``fit`` is called once per trial inside a worker process; ``build_network`` is called by
    the ensemble to rebuild a trial's network from its params before loading ``best_state``;
    ``check_params`` by ``searchsvc validate`` for every choice of the search space.
    :class:`BaseTrainer` provides ``supports_resume``, ``has_weights`` and ``check_params``.
    """

    name: str
    objective_metrics: frozenset[str]
    supports_resume: bool
    has_weights: bool

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming an unknown key or a bad value."""
        ...

    def build_network(
        self, params: Mapping[str, Any], n_features: int, n_classes: int
    ) -> torch.nn.Module:
        """The untrained network for ``params``; its ``forward`` returns class logits."""
        ...

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        """Train one network with ``params`` on ``data``, reporting once per epoch."""
        ...


class BaseTrainer:
    """The defaults of a trainer's optional parts (as Optuna's ``BaseSampler`` gives its hooks).

    Subclasses set ``name`` and ``objective_metrics`` and write ``build_network`` and ``fit``
    (as :class:`Trainer` declares them).

    Attributes:
        supports_resume: ``fit`` continues from ``options.resume_from`` (default False: a trial
            continued from a checkpoint starts again from epoch 1).
        has_weights: the reports carry ``best_state`` (default True; False for a trainer
            that trains nothing, whose trials cannot be ensemble members).
        supports_refit: ``fit`` honours ``options.refit`` (default False: a study with
            ``ensemble: {refit: true}`` is refused at validation).
    """

    name: ClassVar[str]
    objective_metrics: ClassVar[frozenset[str]]
    supports_resume: ClassVar[bool] = False
    has_weights: ClassVar[bool] = True
    supports_refit: ClassVar[bool] = False

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Accept every param (override to reject unknown keys and bad values)."""
        return None
