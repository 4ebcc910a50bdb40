"""The chosen members retrained on training + validation data (``ensemble: {refit: true}``).

Early stopping kept part of the training data aside to choose the epoch; once the search, the
selection and the champion decision have used the validation split, the chosen members are
trained again on all of it, each for its best epoch count, the learning-rate schedule of its
trial included (Goodfellow et al. 2016, section 7.8: retrain on all data for the chosen number
of steps). The best single trial is refit too, so the test split compares like with like.
Nothing here reads the test split: the refit jobs get ``refit_data`` (which has none), and the
ensemble build reports on the test split only afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from searchsvc.ensemble.members import rebuild_network
from searchsvc.ensemble.retrain_runs import log_retrain_run
from searchsvc.execution.retrain import run_on_ray
from searchsvc.retraining import RetrainJob, RetrainResult, refit_data

if TYPE_CHECKING:
    from searchsvc.ensemble.candidates import Candidate
    from searchsvc.study_run import StudyRun

__all__ = ["RefitNote", "refit_pool"]

logger = logging.getLogger(__name__)


@dataclass
class RefitNote:
    """What the refit did: ``members`` (keys, the best single's included), its wall time,
    and ``failed`` (why the pre-refit networks were kept; empty when the refit holds)."""

    members: list[str]
    seconds: float = 0.0
    failed: str = ""


def refit_jobs(pool: list[Candidate], indices: list[int]) -> list[RetrainJob] | str:
    """One refit job per candidate of ``indices``, or why one cannot be refit."""
    jobs = []
    for index in indices:
        member = pool[index].member
        if member.best_epoch is None or member.seed is None:
            return (
                f"trial {member.key} records no best epoch or seed (stored before refit existed)"
            )
        jobs.append(RetrainJob(
            "refit", member.trial_number, member.reseed, dict(member.params), member.seed,
            epochs=member.best_epoch, member=member.key,
        ))  # fmt: skip
    return jobs


def refit_pool(
    run: StudyRun, pool: list[Candidate], weights: np.ndarray, single: int, folder: Path
) -> tuple[list[Candidate], RefitNote]:
    """``pool`` with its members of positive weight and the best single candidate refit.

    If any refit fails, the pool comes back unchanged and the note says why (the registered
    ensemble is then the pre-refit one, with a warning), so nothing the search earned is lost.
    """
    import torch

    started = time.monotonic()
    indices = sorted({*np.flatnonzero(weights > 0).tolist(), single})
    note = RefitNote([pool[i].member.key for i in indices])
    jobs = refit_jobs(pool, indices)
    if isinstance(jobs, str):
        note.failed = jobs
        return pool, note
    data = run.data
    shape = {"n_features": data.n_features, "n_classes": data.n_classes}

    def record(result: RetrainResult) -> None:
        try:
            log_retrain_run(run.tracker, run.spec, result, shape)
        except Exception:  # the run's history is lost, not the refit networks
            logger.warning("%s: its MLflow run was not written", result.job.label, exc_info=True)

    results = run_on_ray(run, jobs, refit_data(data), deadline=None, on_result=record)
    note.seconds = time.monotonic() - started
    bad = [r for r in results if not r.usable]
    if bad:
        note.failed = f"{bad[0].job.label}: {bad[0].reason}"
        return pool, note
    folder.mkdir(parents=True, exist_ok=True)
    refit = list(pool)
    for index, result in zip(indices, results, strict=True):
        candidate = pool[index]
        path = folder / f"refit_{candidate.member.key}.pt"
        torch.save(dict(result.best_state), path)
        network = rebuild_network(
            run.trainer, candidate.member.params, data.n_features, data.n_classes,
            result.best_state, who=f"refit of trial {candidate.member.key}",
        )  # fmt: skip
        refit[index] = dataclasses.replace(candidate, state_path=path, network=network)
    return refit, note
