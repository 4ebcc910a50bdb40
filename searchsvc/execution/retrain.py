"""Reseeds and refits on Ray: each job one Ray task with a trial's resources.

The jobs (``searchsvc.retraining``) are not trials, so they do not go through Tune: no
searcher, no scheduler, no experiment state. Each is one task that calls the trainer through
:func:`searchsvc.retraining.retrain`, as many at once as the cluster has room for (Ray queues
the rest), and returns its history and weights to the driver, which hands each result to
``on_result`` as soon as it is in (so a Ctrl-C loses only the jobs still running).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from searchsvc.execution.ray_session import start_ray
from searchsvc.retraining import RetrainJob, RetrainResult
from searchsvc.signals import reassert_stop_signals, signal_handlers_kept

if TYPE_CHECKING:
    from searchsvc.study_run import StudyRun
    from searchsvc.trainer import Dataset

__all__ = ["run_on_ray"]

logger = logging.getLogger(__name__)


def run_on_ray(
    run: StudyRun,
    jobs: Sequence[RetrainJob],
    data: Dataset,
    *,
    deadline: float | None,
    on_result: Callable[[RetrainResult], None],
) -> list[RetrainResult]:
    """Run ``jobs`` on the run's Ray (joined or started here), in order of submission.

    Args:
        data: what every job trains on (never with a test split).
        deadline: wall-clock time after which jobs do not start and running ones stop at
            their epoch's end (see :func:`searchsvc.retraining.retrain`).
        on_result: called in the driver with each result as it comes in.

    Returns:
        The results, in the order of ``jobs``.
    """
    import ray

    if not jobs:
        return []
    with signal_handlers_kept():
        start_ray(run, run.ray_address or run.settings.ray_address)
        reassert_stop_signals()  # ray.init replaced the SIGTERM handler with one that aborts
    resources = run.spec.resources
    task = ray.remote(_task).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=run.spec.budget.max_failures
    )
    data_ref = ray.put(data)
    refs = [
        task.remote(run.spec.trainer, run.search_path, job, data_ref,
                    run.spec.budget.max_epochs, deadline, resources.cpus)
        for job in jobs
    ]  # fmt: skip
    results: dict[Any, RetrainResult] = {}
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        result = ray.get(done[0])
        results[done[0]] = result
        on_result(result)
    return [results[ref] for ref in refs]


def _task(
    trainer_ref: str,
    search_path: tuple[str, ...],
    job: RetrainJob,
    data: Dataset,
    max_epochs: int,
    deadline: float | None,
    cpus: float,
) -> RetrainResult:
    """One job in a Ray worker: the trainer imported there, one thread per CPU asked for."""
    import torch

    from searchsvc.execution.trainable import worker_device
    from searchsvc.registry import resolve_trainer
    from searchsvc.retraining import retrain

    torch.set_num_threads(max(1, int(cpus)))
    trainer = resolve_trainer(trainer_ref, search_path)
    return retrain(
        trainer, job, data, max_epochs=max_epochs, deadline=deadline, device=worker_device()
    )
