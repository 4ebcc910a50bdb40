"""Optuna and MLflow agree: checked at the start of every run (and by ``searchsvc sync``).

After the journal of deferred writes is replayed (``searchsvc.journal``), every finished Optuna
trial since the last check must have its MLflow run with every epoch once, the run's state
matching Optuna's, and, for a COMPLETE trial with weights, its model; what cannot be made so is
said by a ``searchsvc.reconcile`` tag on the run. The check is bounded: only trials finished since
the last reconciliation (study attribute ``reconciled_through``), read from the newest runs, one
metric history and one artifact listing per trial: never a scan of the whole study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from searchsvc import keys
from searchsvc.errors import TrackingError, first_line
from searchsvc.tracking_ops import batch

if TYPE_CHECKING:
    import optuna

    from searchsvc.tracking import StudyTracker

__all__ = ["Reconciliation", "reconcile"]

logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_TAG = {"FAIL": "FAILED"}


@dataclass
class Reconciliation:
    """What one check found: trial numbers by problem (each also tagged on its run)."""

    checked: int = 0
    state_fixed: list[int] = field(default_factory=list)
    no_run: list[int] = field(default_factory=list)
    epochs: dict[int, str] = field(default_factory=dict)
    no_model: list[int] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.no_run) + len(self.epochs) + len(self.no_model)


def _epoch_problem(trial: FrozenTrial, steps: list[int]) -> str:
    expected = set(trial.intermediate_values)
    missing = sorted(expected - set(steps))
    doubled = sorted({s for s in steps if steps.count(s) > 1})
    parts = []
    if missing:
        parts.append(f"epochs {missing} missing")
    if doubled:
        parts.append(f"epochs {doubled} logged more than once")
    return "; ".join(parts)


def _check(tracker: StudyTracker, trial: FrozenTrial, run: Any, metric: str,
           found: Reconciliation) -> None:  # fmt: skip
    run_id = run.info.run_id
    state = trial.state.name
    if run.data.tags.get(keys.TAG_STATE) != _TAG.get(state, state):
        # e.g. the driver died after Optuna's tell, before the run's end was written
        tags = {keys.TAG_STATE: _TAG.get(state, state),
                keys.TAG_REASON: str(trial.user_attrs.get(keys.REASON, ""))}  # fmt: skip
        tracker.write(batch(run_id, tags=tags), f"trial {trial.number} state (reconciled)")
        tracker.write({"op": "terminate", "run": run_id, "status": _STATUS[state]},
                       f"trial {trial.number} end (reconciled)")  # fmt: skip
        found.state_fixed.append(trial.number)
    steps = [m.step for m in tracker.client.get_metric_history(run_id, metric)]
    problem = _epoch_problem(trial, steps)
    if problem:
        found.epochs[trial.number] = problem
    # Set before Optuna's tell on a trainer with weights ("missing: ..." says why not).
    needs_model = trial.user_attrs.get(keys.WEIGHTS) == keys.WEIGHTS_STORED
    if needs_model and trial.intermediate_values:
        names = {a.path for a in tracker.client.list_artifacts(run_id, "model")}
        if "model/state_dict.pt" not in names:
            found.no_model.append(trial.number)
            problem = "; ".join(p for p in (problem, "no model/ in the run") if p)
    if problem:
        tracker.write(batch(run_id, tags={keys.TAG_RECONCILE: problem}),
                       f"trial {trial.number} reconcile tag")  # fmt: skip


def _record_missing_run(tracker: StudyTracker, trial: FrozenTrial) -> None:
    """A run for a trial MLflow never heard of, saying so (its writes were lost)."""
    state = trial.state.name
    tags = {
        keys.TAG_STATE: _TAG.get(state, state),
        keys.TAG_RECONCILE: "no MLflow run was recorded for this trial (its writes were lost)",
    }
    ref = tracker.create_trial_run(trial.number, trial.params, tags,
                                   what=f"trial {trial.number} run (reconciled)")  # fmt: skip
    tracker.write({"op": "terminate", "run": ref, "status": _STATUS[state]},
                   f"trial {trial.number} end (reconciled)")  # fmt: skip


def reconcile(study: optuna.Study, tracker: StudyTracker, *, metric: str) -> Reconciliation:
    """Check (and where possible mend) the trials finished since the last check.

    Raises:
        TrackingError: MLflow could not be read (one line).
    """
    since = int(study.user_attrs.get(keys.RECONCILED_THROUGH, -1))
    trials = [
        t for t in study.get_trials(deepcopy=False, states=_FINISHED)
        if t.number > since and keys.WARM_FROM not in t.user_attrs
        and not t.user_attrs.get(keys.INTERRUPTED)  # its epochs went on in its successor's run
    ]  # fmt: skip
    found = Reconciliation()
    if not trials:
        return found
    try:
        runs = tracker.newest_trial_runs(2 * len(trials) + 10)
        for trial in trials:
            run = runs.get(trial.number)
            if run is None:
                _record_missing_run(tracker, trial)
                found.no_run.append(trial.number)
                continue
            _check(tracker, trial, run, metric, found)
            found.checked += 1
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many types; one line naming the server
        raise TrackingError(f"MLflow at {tracker.tracking_uri}: {first_line(exc)}") from None
    study.set_user_attr(keys.RECONCILED_THROUGH, max(t.number for t in trials))
    if found.problems or found.state_fixed:
        logger.warning(
            "reconciled %d trial(s) with MLflow: state mended %s, no run %s, epochs %s, "
            "no model %s", len(trials), found.state_fixed, found.no_run, found.epochs,
            found.no_model,
        )  # fmt: skip
    return found
