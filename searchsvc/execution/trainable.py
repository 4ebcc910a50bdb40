"""The Ray Tune function trainable that runs one trial of a trainer.

It is the only place where a trainer meets Ray: it turns each ``EpochReport`` into one
``tune.report`` (one per epoch, so schedulers count epochs), attaches a checkpoint holding the
best-epoch weights, the resumable training state and any files, and resumes from the latest
checkpoint when Ray retries a trial whose worker died or resumes a paused one.

The Ray-free part (loading a checkpoint folder, calling ``fit``, turning reports into result
dicts and checkpoint folders) is :func:`load_checkpoint` and :func:`run_trainer`;
``make_trainable``'s function only adds what needs Ray (the trial's checkpoint, node and
device, ``tune.report`` and its stop), so the trainer contract is testable without a cluster.
A trial the scheduler stops ends inside ``tune.report`` (Ray exits the trial's thread); the
trainer sees that as :class:`~searchsvc.trainer.TrialStopped`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchsvc.search.trial_config import RESUMED_AFTER, TrialTicket, params_of, ticket_of
from searchsvc.trainer import Dataset, EpochReport, FitOptions, Trainer, TrialStopped

__all__ = [
    "CHECKPOINT_BEST",
    "CHECKPOINT_FILES",
    "CHECKPOINT_STATE",
    "DIVERGED",
    "Resume",
    "SendFn",
    "load_checkpoint",
    "make_trainable",
    "run_trainer",
    "worker_device",
]

logger = logging.getLogger(__name__)

CHECKPOINT_BEST = "best_state.pt"
CHECKPOINT_STATE = "training_state.pt"
CHECKPOINT_FILES = "files"
DIVERGED = "diverged"
"""The result key that tells the searcher a trial's last report had ``diverged=True``."""
# The service's own entries in a saved training state (taken out again before resuming).
_OWNER = "_searchsvc_trial"
_BEST_EPOCH = "_searchsvc_best_epoch"
_EPOCH = "_searchsvc_epoch"

SendFn = Callable[[dict[str, Any], Path | None, int], None]
"""Delivers one epoch's result: ``(metrics, checkpoint folder or None, epoch)``. The folder
exists only during the call (Ray copies it into its storage inside ``tune.report``)."""


@dataclass(frozen=True)
class Resume:
    """A trial's checkpoint as loaded: where its trainer and its bookkeeping continue.

    Attributes:
        state: the ``training_state`` of the checkpoint's epoch, for ``FitOptions.resume_from``.
        best_epoch: the epoch of the best weights so far (0 if none).
        best_state: those weights, or None.
        epoch: the epoch the checkpoint was written after (where the trial continues).
    """

    state: Mapping[str, Any]
    best_epoch: int
    best_state: Mapping[str, Any] | None
    epoch: int = 0


def make_trainable(
    trainer_ref: str, *, search_path: tuple[str, ...] = (), max_epochs: int, cpus: float
) -> Callable[..., None]:
    """A function trainable ``(config, data)`` for ``tune.with_parameters(..., data=...)``.

    ``search_path``: the folders a ``module:object`` trainer is imported from on the worker.
    """

    def run_trial(config: dict[str, Any], data: Dataset) -> None:
        import ray
        import torch
        from ray import tune

        from searchsvc.registry import resolve_trainer

        ticket = ticket_of(config)
        torch.set_num_threads(max(1, int(cpus)))
        # Which Ray node ran the trial (several nodes may share one IP address).
        node_id = ray.get_runtime_context().get_node_id()
        trainer = resolve_trainer(trainer_ref, search_path)
        resume = _resume_point(tune.get_checkpoint(), ticket)

        def send(metrics: dict[str, Any], folder: Path | None, epoch: int) -> None:
            saved = None
            if folder is not None:
                saved = tune.Checkpoint.from_directory(str(folder))
                # The epoch lets a new driver resume the trial exactly here (see callbacks).
                saved.set_metadata({"epoch": epoch})
            try:
                tune.report(metrics, checkpoint=saved)
            except SystemExit:  # Ray's way of ending a stopped trial's thread
                raise TrialStopped(f"trial {ticket.number} stopped after epoch {epoch}") from None

        try:
            run_trainer(
                trainer, params_of(config), data, send, number=ticket.number,
                max_epochs=max_epochs, seed=ticket.seed, device=worker_device(), node_id=node_id,
                resume=resume,
            )  # fmt: skip
        except TrialStopped:
            raise SystemExit(0) from None  # what Ray expects of a stopped trial's thread

    return run_trial


def _resume_point(checkpoint: Any, ticket: TrialTicket) -> Resume | None:
    """Where the trial continues: Ray's checkpoint of this trial (a retried worker, a paused
    trial), else the checkpoint of the interrupted trial it continues, else nowhere."""
    from ray import tune

    owner = ticket.number
    if checkpoint is None and ticket.resume_checkpoint:
        # This trial continues one a dead driver left unfinished, from its last checkpoint.
        folder = Path(ticket.resume_checkpoint)
        if (folder / CHECKPOINT_STATE).exists():
            checkpoint = tune.Checkpoint.from_directory(str(folder))
            owner = int(ticket.resume_of)
        else:
            logger.warning("trial %d: checkpoint %s is gone; starting afresh", owner, folder)
    if checkpoint is None:
        return None
    # Loaded inside the context: a checkpoint in remote storage is a temporary copy.
    with checkpoint.as_directory() as folder:
        resume = load_checkpoint(Path(folder), owner)
    if resume is not None:
        logger.info("trial %d resumes from its checkpoint", ticket.number)
    return resume


def load_checkpoint(folder: Path, owner: int) -> Resume | None:
    """The resumable state saved in checkpoint ``folder`` if it belongs to trial ``owner``.

    None when the folder holds no training state, or holds another trial's: a reused Ray
    actor can still hold the previous trial's checkpoint. Both files are loaded with
    ``weights_only=True``: a training state is plain data by contract, and a path read from
    the Optuna database must never unpickle arbitrary objects.
    """
    import torch

    state_file = folder / CHECKPOINT_STATE
    if not state_file.exists():
        return None
    state = torch.load(state_file, weights_only=True)
    if not isinstance(state, Mapping) or state.get(_OWNER) != owner:
        return None
    best_file = folder / CHECKPOINT_BEST
    best_state = torch.load(best_file, weights_only=True) if best_file.exists() else None
    training_state = {k: v for k, v in state.items() if k not in (_OWNER, _BEST_EPOCH, _EPOCH)}
    epoch = int(state.get(_EPOCH, state.get("epoch", 0)))
    return Resume(training_state, int(state.get(_BEST_EPOCH, 0)), best_state, epoch)


def run_trainer(
    trainer: Trainer,
    params: Mapping[str, Any],
    data: Dataset,
    send: SendFn,
    *,
    number: int,
    max_epochs: int,
    seed: int,
    device: str,
    node_id: str,
    resume: Resume | None = None,
) -> None:
    """Run one trial of ``trainer`` and deliver each epoch's report through ``send``.

    ``FitOptions.resume_from`` is set only when there is a state to resume from and the
    trainer declares ``supports_resume``; asked to resume, any other trainer starts the trial
    again from epoch 1 and its earlier best weights are dropped (their epoch numbers belong
    to the abandoned run), with a warning.

    Each report becomes ``send(metrics, folder, epoch)``: the trainer's metrics (non-finite
    values as NaN) plus ``epoch``, ``best_epoch``, ``node_id`` and, on a diverged report,
    ``diverged``; and a checkpoint folder with the best weights so far, the training state and
    the report's files (None when there is nothing to save). ``send`` raises
    :class:`~searchsvc.trainer.TrialStopped` when the trial is stopped; it propagates.
    """
    if resume is not None and not trainer.supports_resume:
        logger.warning(
            "trial %d: trainer %r does not support resume, so it cannot continue from its "
            "checkpoint (epoch %s); starting it again from epoch 1",
            number, trainer.name, resume.state.get("epoch", "?"),
        )  # fmt: skip
        resume = None
    if resume is not None and resume.epoch >= max_epochs:
        # A driver killed after the trial's last epoch but before Optuna heard of it: there is
        # no epoch left to continue, and a trial that reports nothing cannot be told. Start
        # again; the searcher records the trial as a restart (its own values and MLflow run).
        logger.warning(
            "trial %d: its checkpoint is after the last epoch (%d of %d), so there is nothing "
            "to continue; starting it again from epoch 1", number, resume.epoch, max_epochs,
        )  # fmt: skip
        resume = None
    options = FitOptions(
        max_epochs=max_epochs, seed=seed, device=device,
        resume_from=resume.state if resume is not None else None,
    )  # fmt: skip
    reporter = _Reporter(send, number=number, node_id=node_id, resume=resume)
    trainer.fit(params, data, reporter, options)


class _Reporter:
    """The ``report`` callback given to ``fit``: one ``send`` per epoch, checkpoint included."""

    def __init__(self, send: SendFn, *, number: int, node_id: str, resume: Resume | None) -> None:
        self._send = send
        self._number = number
        self._node_id = node_id
        self.best_epoch = resume.best_epoch if resume is not None else 0
        self.best_state = resume.best_state if resume is not None else None
        self.resumed_after = resume.epoch if resume is not None else 0

    def __call__(self, epoch_report: EpochReport) -> None:
        import torch

        if epoch_report.best_state is not None:
            self.best_epoch, self.best_state = epoch_report.epoch, epoch_report.best_state
        metrics: dict[str, Any] = {k: _finite_or_nan(v) for k, v in epoch_report.metrics.items()}
        metrics.update(epoch=epoch_report.epoch, best_epoch=self.best_epoch, node_id=self._node_id)
        metrics[RESUMED_AFTER] = self.resumed_after
        if epoch_report.diverged:
            metrics[DIVERGED] = 1.0
        saves = self.best_state is not None or epoch_report.training_state or epoch_report.files
        if not saves:
            self._send(metrics, None, epoch_report.epoch)
            return
        with tempfile.TemporaryDirectory(prefix="searchsvc-ckpt-") as folder:
            # The latest checkpoint carries the best weights too, so Ray keeps only one.
            if self.best_state is not None:
                torch.save(dict(self.best_state), os.path.join(folder, CHECKPOINT_BEST))
            if epoch_report.training_state is not None:
                state = {
                    **epoch_report.training_state,
                    _BEST_EPOCH: self.best_epoch,
                    _OWNER: self._number,
                    _EPOCH: epoch_report.epoch,
                }
                torch.save(state, os.path.join(folder, CHECKPOINT_STATE))
            if epoch_report.files:
                files = Path(folder) / CHECKPOINT_FILES
                files.mkdir()
                for name, content in epoch_report.files.items():
                    (files / name).write_bytes(content)
            self._send(metrics, Path(folder), epoch_report.epoch)


def worker_device() -> str:
    """The CUDA device Ray assigned to this trial, else the CPU."""
    import ray
    import torch

    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and torch.cuda.is_available():
        # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs, so the first visible one is ours.
        return "cuda:0"
    return "cpu"


def _finite_or_nan(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan
