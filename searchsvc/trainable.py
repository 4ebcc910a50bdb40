"""The Ray Tune function trainable that runs one trial of a trainer.

It is the only place where a trainer meets Ray: it turns each ``EpochReport`` into one
``tune.report`` (one per epoch, so schedulers count epochs), attaches a checkpoint holding the
best-epoch weights, the resumable training state and any files, and resumes from the latest
checkpoint when Ray retries a trial whose worker died or resumes a paused one.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from searchsvc.trainer import Dataset, EpochReport

__all__ = ["make_trainable", "CHECKPOINT_BEST", "CHECKPOINT_STATE", "CHECKPOINT_FILES"]

logger = logging.getLogger(__name__)

CHECKPOINT_BEST = "best_state.pt"
CHECKPOINT_STATE = "training_state.pt"
CHECKPOINT_FILES = "files"


def make_trainable(
    trainer_ref: str, *, max_epochs: int, seed: int, cpus: float
) -> Callable[..., None]:
    """A function trainable ``(config, data)`` for ``tune.with_parameters(..., data=...)``."""

    def run_trial(config: dict[str, Any], data: Dataset) -> None:
        import ray
        import torch
        from ray import tune

        from searchsvc.registry import resolve_trainer
        from searchsvc.searcher import (
            RESUME_CHECKPOINT_KEY,
            RESUME_OF_KEY,
            SEED_NUMBER_KEY,
            TRIAL_NUMBER_KEY,
        )

        number = int(config[TRIAL_NUMBER_KEY])
        seed_number = int(config.get(SEED_NUMBER_KEY, number))
        params = {k: v for k, v in config.items() if not k.startswith("_")}
        torch.set_num_threads(max(1, int(cpus)))
        # Which Ray node ran the trial (several nodes may share one IP address).
        node_id = ray.get_runtime_context().get_node_id()
        trainer = resolve_trainer(trainer_ref)

        resume_from = None
        best_epoch = 0
        best_state = None
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
            with checkpoint.as_directory() as folder:
                state_file = Path(folder) / CHECKPOINT_STATE
                state = torch.load(state_file, weights_only=False) if state_file.exists() else {}
                # A reused actor can still hold the previous trial's checkpoint: check the owner.
                if state.get("_searchsvc_trial") == owner:
                    resume_from = state
                    best_epoch = int(state.get("_searchsvc_best_epoch", 0))
                    best_file = Path(folder) / CHECKPOINT_BEST
                    if best_file.exists():
                        best_state = torch.load(best_file, weights_only=True)
                    logger.info("trial %d resumes from its checkpoint", number)

        def report(epoch_report: EpochReport) -> bool:
            nonlocal best_epoch, best_state
            if epoch_report.best_state is not None:
                best_epoch, best_state = epoch_report.epoch, epoch_report.best_state
            metrics = {k: _finite_or_nan(v) for k, v in epoch_report.metrics.items()}
            metrics.update(epoch=epoch_report.epoch, best_epoch=best_epoch, node_id=node_id)
            saves = best_state is not None or epoch_report.training_state or epoch_report.files
            if not saves:
                tune.report(metrics)
                return True
            with tempfile.TemporaryDirectory(prefix="searchsvc-ckpt-") as folder:
                # The latest checkpoint carries the best weights too, so Ray keeps only one.
                if best_state is not None:
                    torch.save(dict(best_state), os.path.join(folder, CHECKPOINT_BEST))
                if epoch_report.training_state is not None:
                    state = dict(
                        epoch_report.training_state,
                        _searchsvc_best_epoch=best_epoch,
                        _searchsvc_trial=number,
                    )
                    torch.save(state, os.path.join(folder, CHECKPOINT_STATE))
                if epoch_report.files:
                    files = Path(folder) / CHECKPOINT_FILES
                    files.mkdir()
                    for name, content in epoch_report.files.items():
                        (files / name).write_bytes(content)
                saved = tune.Checkpoint.from_directory(folder)
                # The epoch lets a new driver resume the trial exactly here (see callbacks).
                saved.set_metadata({"epoch": epoch_report.epoch})
                tune.report(metrics, checkpoint=saved)
            return True

        trainer.fit(
            params,
            data,
            report,
            max_epochs=max_epochs,
            seed=seed + seed_number,
            device=_device(),
            resume_from=resume_from,
        )

    return run_trial


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
