"""The Ray Tune function trainable that runs one trial of a trainer.

It is the only place where a trainer meets Ray: it turns each ``EpochReport`` into one
``tune.report`` (one per epoch, so schedulers count epochs), attaches a checkpoint holding the
best-epoch weights, the resumable training state and any files, and resumes from the latest
checkpoint when Ray retries a trial whose worker died or resumes a paused one.

The Ray-free part (loading a checkpoint folder, calling ``fit`` with the keywords the trainer
takes, turning reports into result dicts and checkpoint folders) is :func:`load_checkpoint`
and :func:`run_trainer`; ``make_trainable``'s function only adds what needs Ray (the trial's
checkpoint, node and device, and ``tune.report``), so the trainer contract is testable
without a cluster.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchsvc.trainer import Dataset, EpochReport, FitResult, Trainer

__all__ = [
    "CHECKPOINT_BEST",
    "CHECKPOINT_FILES",
    "CHECKPOINT_STATE",
    "Resume",
    "SendFn",
    "accepts_resume_from",
    "load_checkpoint",
    "make_trainable",
    "run_trainer",
]

logger = logging.getLogger(__name__)

CHECKPOINT_BEST = "best_state.pt"
CHECKPOINT_STATE = "training_state.pt"
CHECKPOINT_FILES = "files"

SendFn = Callable[[dict[str, Any], Path | None, int], None]
"""Delivers one epoch's result: ``(metrics, checkpoint folder or None, epoch)``. The folder
exists only during the call (Ray copies it into its storage inside ``tune.report``)."""


@dataclass(frozen=True)
class Resume:
    """A trial's checkpoint as loaded: where its trainer and its bookkeeping continue.

    Attributes:
        state: the ``training_state`` of the checkpoint's epoch, for ``fit(resume_from=...)``.
        best_epoch: the epoch of the best weights so far (0 if none).
        best_state: those weights, or None.
    """

    state: Mapping[str, Any]
    best_epoch: int
    best_state: Mapping[str, Any] | None


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
        from searchsvc.searcher import (
            RESUME_CHECKPOINT_KEY,
            RESUME_OF_KEY,
            TRIAL_NUMBER_KEY,
            TRIAL_SEED_KEY,
        )

        number = int(config[TRIAL_NUMBER_KEY])
        params = {k: v for k, v in config.items() if not k.startswith("_")}
        torch.set_num_threads(max(1, int(cpus)))
        # Which Ray node ran the trial (several nodes may share one IP address).
        node_id = ray.get_runtime_context().get_node_id()
        trainer = resolve_trainer(trainer_ref, search_path)

        resume = None
        checkpoint = tune.get_checkpoint()
        owner = number
        if checkpoint is None and config.get(RESUME_CHECKPOINT_KEY):
            # This trial continues one a dead driver left unfinished, from its last checkpoint.
            folder = Path(config[RESUME_CHECKPOINT_KEY])
            if (folder / CHECKPOINT_STATE).exists():
                checkpoint = tune.Checkpoint.from_directory(str(folder))
                owner = int(config[RESUME_OF_KEY])
            else:
                logger.warning("trial %d: checkpoint %s is gone; starting afresh", number, folder)
        if checkpoint is not None:
            # Loaded inside the context: a checkpoint in remote storage is a temporary copy.
            with checkpoint.as_directory() as folder:
                resume = load_checkpoint(Path(folder), owner)
            if resume is not None:
                logger.info("trial %d resumes from its checkpoint", number)

        def send(metrics: dict[str, Any], folder: Path | None, epoch: int) -> None:
            if folder is None:
                tune.report(metrics)
                return
            saved = tune.Checkpoint.from_directory(str(folder))
            # The epoch lets a new driver resume the trial exactly here (see callbacks).
            saved.set_metadata({"epoch": epoch})
            tune.report(metrics, checkpoint=saved)

        run_trainer(
            trainer,
            params,
            data,
            send,
            number=number,
            max_epochs=max_epochs,
            seed=int(config[TRIAL_SEED_KEY]),
            device=_device(),
            node_id=node_id,
            resume=resume,
        )

    return run_trial


def load_checkpoint(folder: Path, owner: int) -> Resume | None:
    """The resumable state saved in checkpoint ``folder`` if it belongs to trial ``owner``.

    None when the folder holds no training state, or holds another trial's: a reused Ray
    actor can still hold the previous trial's checkpoint.
    """
    import torch

    state_file = folder / CHECKPOINT_STATE
    if not state_file.exists():
        return None
    # The state holds the trainer's own objects (RNG states, scheduler dicts): not weights_only.
    state = torch.load(state_file, weights_only=False)
    if not isinstance(state, Mapping) or state.get("_searchsvc_trial") != owner:
        return None
    best_file = folder / CHECKPOINT_BEST
    best_state = torch.load(best_file, weights_only=True) if best_file.exists() else None
    return Resume(state, int(state.get("_searchsvc_best_epoch", 0)), best_state)


def accepts_resume_from(fit: Callable[..., Any]) -> bool:
    """Whether ``fit`` can be called with ``resume_from=`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(fit).parameters.values()
    except (TypeError, ValueError):  # no readable signature (a C callable): trust the protocol
        return True
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(
        (p.name == "resume_from" and p.kind in named) or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


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
) -> FitResult | None:
    """Run one trial of ``trainer`` and deliver each epoch's report through ``send``.

    ``resume_from`` is passed to ``fit`` only when there is a state to resume from, so a
    trainer whose ``fit`` lacks that (optional) parameter works; asked to resume, such a
    trainer starts the trial again from epoch 1 and its earlier best weights are dropped
    (their epoch numbers belong to the abandoned run), with a warning.

    Each report becomes ``send(metrics, folder, epoch)``: the trainer's metrics (non-finite
    values as NaN) plus ``epoch``, ``best_epoch`` and ``node_id``, and a checkpoint folder
    with the best weights so far, the training state and the report's files (None when
    there is nothing to save).

    Returns:
        What ``fit`` returned. The service keeps nothing from it (weights, best epoch and
        divergence come from the reports); its status and reason are logged, with a warning
        where it contradicts the reports.
    """
    kwargs: dict[str, Any] = {"max_epochs": max_epochs, "seed": seed, "device": device}
    if resume is not None and not accepts_resume_from(trainer.fit):
        logger.warning(
            "trial %d: trainer %r takes no resume_from, so it cannot continue from its "
            "checkpoint (epoch %s); starting it again from epoch 1",
            number,
            getattr(trainer, "name", type(trainer).__name__),
            resume.state.get("epoch", "?"),
        )
        resume = None
    elif resume is not None:
        kwargs["resume_from"] = resume.state
    reporter = _Reporter(send, number=number, node_id=node_id, resume=resume)
    result = trainer.fit(params, data, reporter, **kwargs)
    _log_result(number, result, reporter)
    return result if isinstance(result, FitResult) else None


class _Reporter:
    """The ``report`` callback given to ``fit``: one ``send`` per epoch, checkpoint included."""

    def __init__(self, send: SendFn, *, number: int, node_id: str, resume: Resume | None) -> None:
        self._send = send
        self._number = number
        self._node_id = node_id
        self.best_epoch = resume.best_epoch if resume is not None else 0
        self.best_state = resume.best_state if resume is not None else None
        self.last_metrics: Mapping[str, float] = {}

    def __call__(self, epoch_report: EpochReport) -> bool:
        import torch

        if epoch_report.best_state is not None:
            self.best_epoch, self.best_state = epoch_report.epoch, epoch_report.best_state
        self.last_metrics = epoch_report.metrics
        metrics: dict[str, Any] = {k: _finite_or_nan(v) for k, v in epoch_report.metrics.items()}
        metrics.update(epoch=epoch_report.epoch, best_epoch=self.best_epoch, node_id=self._node_id)
        saves = self.best_state is not None or epoch_report.training_state or epoch_report.files
        if not saves:
            self._send(metrics, None, epoch_report.epoch)
            return True
        with tempfile.TemporaryDirectory(prefix="searchsvc-ckpt-") as folder:
            # The latest checkpoint carries the best weights too, so Ray keeps only one.
            if self.best_state is not None:
                torch.save(dict(self.best_state), os.path.join(folder, CHECKPOINT_BEST))
            if epoch_report.training_state is not None:
                state = dict(
                    epoch_report.training_state,
                    _searchsvc_best_epoch=self.best_epoch,
                    _searchsvc_trial=self._number,
                )
                torch.save(state, os.path.join(folder, CHECKPOINT_STATE))
            if epoch_report.files:
                files = Path(folder) / CHECKPOINT_FILES
                files.mkdir()
                for name, content in epoch_report.files.items():
                    (files / name).write_bytes(content)
            self._send(metrics, Path(folder), epoch_report.epoch)
        return True


def _log_result(number: int, result: Any, reporter: _Reporter) -> None:
    """Log what ``fit`` returned; warn where it claims what the reports did not deliver."""
    if not isinstance(result, FitResult):
        logger.info("trial %d: fit returned %r, not a FitResult (nothing depends on it)",
                    number, type(result).__name__)  # fmt: skip
        return
    logger.info(
        "trial %d: %s%s; best epoch %d",
        number,
        result.status,
        f" ({result.reason})" if result.reason else "",
        reporter.best_epoch,
    )
    # A resumed trial's weights may come from its checkpoint: reported by the earlier run.
    if result.best_state is not None and reporter.best_state is None:
        logger.warning(
            "trial %d: fit returned a best_state that no EpochReport carried; the service "
            "keeps only reported weights (EpochReport.best_state), so none are kept",
            number,
        )
    if result.status == "diverged" and not reporter.last_metrics.get("diverged"):
        logger.warning(
            "trial %d: fit returned status 'diverged' but its last report has no "
            "'diverged' metric; the trial is recorded from its reports (report diverged=1.0)",
            number,
        )


def _device() -> str:
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
