"""Reseeds and refits in MLflow: each one a child run of the study's parent run, tagged
``searchsvc.retrain`` (``reseed`` or ``refit``) and ``searchsvc.retrain_of`` (the trial), never
``searchsvc.trial_number``: they are not trials, and nothing that counts trials sees them.

A finished reseed stores its weights under ``model/`` as a trial does, so the ensemble build
reads it back as a candidate (:func:`reseed_sources`). A refit's weights go into the
registered ensemble; its run keeps its history (its validation metrics are in-sample, so
they are left out).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchsvc import keys
from searchsvc.ensemble.candidates import Source
from searchsvc.retraining import RetrainResult
from searchsvc.tracking_ops import batch

if TYPE_CHECKING:
    from searchsvc.study.spec import StudySpec
    from searchsvc.tracking import StudyTracker

__all__ = ["log_retrain_run", "objective_at_best_epoch", "reseed_sources"]

_STATUS = {"finished": "FINISHED", "out_of_time": "KILLED", "not_started": "KILLED",
           "failed": "FAILED"}  # fmt: skip


def objective_at_best_epoch(result: RetrainResult, metric: str) -> float | None:
    """The primary objective's value at the epoch whose weights were kept (a trial's value)."""
    for row in result.history:
        if int(row["epoch"]) == result.best_epoch:
            return row.get(metric)
    return None


def log_retrain_run(
    tracker: StudyTracker, spec: StudySpec, result: RetrainResult, shape: dict[str, int]
) -> str | None:
    """The child run of one reseed or refit: params, tags, every epoch's metrics, its
    weights (a finished reseed's), its end. Through the tracker's write path, so an outage
    journals it. A job that never started leaves no run (returns None)."""
    if result.status == "not_started":
        return None
    job = result.job
    value = objective_at_best_epoch(result, spec.primary.metric)
    tags = {
        keys.TAG_RETRAIN: job.kind, keys.TAG_RETRAIN_OF: str(job.source),
        keys.TAG_STATE: _STATUS[result.status], keys.TAG_REASON: result.reason,
        keys.trial_tag("best_epoch"): str(result.best_epoch),
        keys.trial_tag("epochs"): str(len(result.history)),
        keys.trial_tag("seconds"): f"{result.seconds:.1f}",
    }  # fmt: skip
    if job.kind == "reseed":
        tags[keys.TAG_RESEED] = str(job.index)
        if value is not None and math.isfinite(value):
            tags[keys.trial_tag("value")] = repr(float(value))
    params = {**job.params, "seed": job.seed}
    run_id = tracker.create_child_run(job.label, params, tags, what=f"{job.label} start")
    tracker.write(batch(run_id, metrics=_rows(result)), f"{job.label} metrics")
    if job.kind == "reseed" and result.usable:
        _store_weights(tracker, run_id, spec, result, shape)
    status = _STATUS[result.status]
    tracker.write({"op": "terminate", "run": run_id, "status": status}, f"{job.label} end")
    return run_id


def _rows(result: RetrainResult) -> list[tuple[str, float, int, int]]:
    """Every epoch's finite metrics as ``log_batch`` rows (a refit's without ``val_*``)."""
    now = int(time.time() * 1000)
    in_sample = result.job.kind == "refit"
    return [
        (name, float(value), now, int(row["epoch"]))
        for row in result.history
        for name, value in row.items()
        if name != "epoch" and value == value and not (in_sample and name.startswith("val_"))
    ]


def _store_weights(
    tracker: StudyTracker, run_id: str, spec: StudySpec, result: RetrainResult,
    shape: dict[str, int],
) -> None:  # fmt: skip
    import torch

    job = result.job
    info: dict[str, Any] = {
        "trainer": spec.trainer, "params": dict(job.params), "trial_number": job.source,
        "reseed": job.index, "best_epoch": result.best_epoch, "seed": job.seed, **shape,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="searchsvc-reseed-") as folder:
        state_file = Path(folder) / "state_dict.pt"
        torch.save(dict(result.best_state), state_file)
        tracker.log_model(run_id, state_file, info)


def reseed_sources(tracker: StudyTracker, pairs: list[tuple[int, int]]) -> list[Source]:
    """The finished reseeds ``(trial number, reseed number)`` of ``pairs`` that MLflow holds,
    as candidate sources, in the order of ``pairs``."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=(
            f"tags.`{keys.TAG_PARENT}` = '{tracker.parent_run_id}' and "
            f"tags.`{keys.TAG_RETRAIN}` = 'reseed' and attributes.status = 'FINISHED'"
        ),
        max_results=10000,
    )
    found: dict[tuple[int, int], Source] = {}
    for run in runs:
        tags = run.data.tags
        number, index = int(tags[keys.TAG_RETRAIN_OF]), int(tags[keys.TAG_RESEED])
        value = float(tags.get(keys.trial_tag("value"), "nan"))
        found.setdefault((number, index), Source(number, value, run.info.run_id, reseed=index))
    return [found[pair] for pair in pairs if pair in found]
