"""The MLflow writes of a study as records: plain JSON data that ``apply_record`` makes.

Every write of :class:`searchsvc.tracking.StudyTracker` is one of these records, so a write
that must wait for an unreachable server can be journaled on disk (``searchsvc.journal``) and
made later by another process (the next ``searchsvc run``, or ``searchsvc sync``). A record
names runs by id, or, for a trial run not created yet, by a placeholder (``pending-...``) that
the run carries as its ``searchsvc.journal_ref`` tag once created, so a later process finds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag

from searchsvc import keys
from searchsvc.errors import TrackingError

if TYPE_CHECKING:
    from searchsvc.tracking import StudyTracker

__all__ = ["apply_record", "batch", "is_placeholder"]

_PLACEHOLDER = "pending-"


def is_placeholder(ref: str) -> bool:
    """True for a run named by a placeholder (its trial run not created in MLflow yet)."""
    return ref.startswith(_PLACEHOLDER)


def batch(
    run: str,
    *,
    metrics: list[tuple[str, float, int, int]] = (),  # type: ignore[assignment]
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ``log_batch`` record: metrics as ``(key, value, timestamp_ms, step)``."""
    return {
        "op": "log_batch", "run": run, "metrics": [list(m) for m in metrics],
        "tags": dict(tags or {}), "params": dict(params or {}),
    }  # fmt: skip


def _log_batch(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    run_id = tracker.resolve_run(record["run"])
    metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in record["metrics"]]
    tags = [RunTag(k, v) for k, v in record["tags"].items()]
    params = [Param(k, v) for k, v in record["params"].items()]
    for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes 1000 metrics a batch
        first = start == 0
        tracker.client.log_batch(
            run_id, metrics=metrics[start : start + 1000],
            tags=tags if first else [], params=params if first else [],
        )  # fmt: skip


def _create_trial_run(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    ref = record["ref"]
    # Found again if made before (by a driver that died before its "done" line, or by this
    # one before the params below failed): a run is created once.
    if not tracker.known_ref(ref, look_in_mlflow=bool(record.get("replayed"))):
        tags = {**record["tags"], keys.TAG_JOURNAL_REF: ref}
        run = tracker.client.create_run(tracker.experiment_id, run_name=record["name"], tags=tags)
        tracker.created(ref, int(record["number"]), run.info.run_id)
    params = [Param(k, v) for k, v in record["params"].items()]
    if params:  # logging the same params again is accepted
        tracker.client.log_batch(tracker.resolve_run(ref), params=params)


def _set_status(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    tracker.client.update_run(tracker.resolve_run(record["run"]), status=record["status"])


def _terminate(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    tracker.client.set_terminated(tracker.resolve_run(record["run"]), status=record["status"])


def _log_artifacts(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    tracker.client.log_artifacts(
        tracker.resolve_run(record["run"]), record["folder"], record["artifact_path"]
    )


def _hand_back(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    """The adopted run goes back to the interrupted trial it came from (see run_handover)."""
    old_id = tracker.resolve_run(record["old"])
    previous = tracker.client.get_run(old_id).data.tags.get(keys.TAG_RESUMED_FROM, "")
    tracker.client.log_batch(old_id, tags=[
        RunTag(keys.TAG_TRIAL, previous), RunTag(keys.TAG_STATE, "INTERRUPTED"),
        RunTag(keys.TAG_SUPERSEDED_BY, tracker.resolve_run(record["new"])),
    ])  # fmt: skip
    tracker.client.set_terminated(old_id, status="KILLED")


def _supersede(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    superseded = [RunTag(keys.TAG_SUPERSEDED_BY, tracker.resolve_run(record["new"]))]
    tracker.client.log_batch(tracker.resolve_run(record["old"]), tags=superseded)


_OPS = {
    "log_batch": _log_batch,
    "create_trial_run": _create_trial_run,
    "set_status": _set_status,
    "terminate": _terminate,
    "log_artifacts": _log_artifacts,
    "hand_back": _hand_back,
    "supersede": _supersede,
}


def apply_record(tracker: StudyTracker, record: Mapping[str, Any]) -> None:
    """Makes the MLflow write ``record`` describes, through ``tracker``'s client.

    Raises:
        TrackingError: an unknown kind of record (a journal from another version).
        Exception: whatever MLflow raises (the caller tells an outage from a refusal).
    """
    op = _OPS.get(record.get("op", ""))
    if op is None:
        raise TrackingError(f"unknown MLflow journal record {record.get('op')!r}")
    op(tracker, record)
