"""Reseeds and refits on Ray: each job one Ray task with a trial's resources.

The jobs (``searchsvc.retraining``) are not trials, so they do not go through Tune: no
searcher, no scheduler, no experiment state. Each is one task that calls the trainer through
:func:`searchsvc.retraining.retrain`, as many at once as ``max_concurrent_trials`` lets trials
run (all of them without it; Ray queues what the cluster has no room for). Each returns its
history and weights to the driver, which hands the result to ``on_result`` as soon as it is in
(so a Ctrl-C loses only the jobs still running); a task Ray could not finish is a failed job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from searchsvc.errors import first_line
from searchsvc.execution.ray_session import start_ray
from searchsvc.retraining import NOT_STARTED as _NOT_STARTED
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
    if deadline is not None and time.time() >= deadline:  # no Ray, no workers, for nothing
        results = [RetrainResult(job, "not_started", _NOT_STARTED) for job in jobs]
        for result in results:
            on_result(result)
        return results
    with signal_handlers_kept():
        start_ray(run, run.ray_address or run.settings.ray_address)
        reassert_stop_signals()  # ray.init replaced the SIGTERM handler with one that aborts
    resources = run.spec.resources
    task = ray.remote(_task).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=run.spec.budget.max_failures
    )
    data_ref = ray.put(data)
    spec = run.spec
    # As many at once as the study lets trials run (None: as many as the cluster takes).
    at_once = spec.budget.max_concurrent_trials or len(jobs)
    results: dict[int, RetrainResult] = {}
    running: dict[Any, int] = {}
    queue = list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < at_once:
            index, job = queue.pop(0)
            ref = task.remote(spec.trainer, run.search_path, job, data_ref,
                              spec.budget.max_epochs, deadline, resources.cpus)  # fmt: skip
            running[ref] = index
        # With a timeout, so that Ctrl-C and SIGTERM are seen while jobs run (a wait without
        # one blocks inside Ray, where Python's signal handlers do not run).
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        if not done:
            continue
        index = running.pop(done[0])
        results[index] = _result_of(done[0], jobs[index])
        on_result(results[index])
    return [results[i] for i in range(len(jobs))]


def _result_of(ref: Any, job: RetrainJob) -> RetrainResult:
    """The task's result; a task Ray could not finish (its worker died past its retries, the
    trainer would not import) is a failed job, not the end of the others."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        logger.debug("%s: Ray could not run it", job.label, exc_info=True)
        return RetrainResult(job, "failed", f"{type(exc).__name__}: {first_line(exc)}")


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
