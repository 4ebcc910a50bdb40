"""Ray Tune callbacks that run in the driver: MLflow tracking (here) and the progress
display (``searchsvc.execution.progress``, re-exported here).

They read each trial's outcome from the ``OptunaSearcher`` (which Tune notifies first), so
MLflow, Optuna and the progress display always agree on COMPLETE / PRUNED / FAIL.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from searchsvc import keys
from searchsvc.errors import first_line
from searchsvc.execution.progress import ProgressCallback
from searchsvc.execution.trainable import CHECKPOINT_BEST, CHECKPOINT_FILES
from searchsvc.search.searcher import OptunaSearcher, TrialOutcome, TrialState
from searchsvc.search.trial_config import RESUMED_AFTER, params_of, ticket_of
from searchsvc.tracking import StudyTracker

__all__ = ["TrackingCallback", "ProgressCallback", "RAY_RESULT_KEYS"]

logger = logging.getLogger(__name__)

RAY_RESULT_KEYS = frozenset(
    {
        "timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
        "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "date",
        "done", "trial_id", "experiment_tag", "config", "checkpoint_dir_name",
        "should_checkpoint", "timesteps_total", "episodes_total", "timesteps_since_restore",
        "epoch", "node_id", RESUMED_AFTER,
    }
)  # fmt: skip


class TrackingCallback(Callback):
    """Mirrors every trial into its MLflow child run: params, epoch metrics, files, model."""

    def __init__(
        self,
        tracker: StudyTracker,
        searcher: OptunaSearcher,
        *,
        trainer_ref: str,
        n_features: int,
        n_classes: int,
        has_weights: bool | None = None,
    ) -> None:
        """``has_weights``: the trainer's (default: read from the trainer ``trainer_ref``
        names, which the study file's validation has imported already)."""
        self._tracker = tracker
        self._searcher = searcher
        self._trainer_ref = trainer_ref
        self._has_weights = _has_weights(trainer_ref) if has_weights is None else has_weights
        # The searcher stores the weights before it tells Optuna COMPLETE (see store_weights).
        searcher.weights_hook = self.store_weights
        self._trials: dict[str, Any] = {}
        self._shape = {"n_features": n_features, "n_classes": n_classes}
        self._runs: dict[str, str] = {}
        self._checkpoints: dict[str, str] = {}  # trial id -> its latest checkpoint's path
        self._node_tagged: set[str] = set()
        self._restarts: set[str] = set()
        # Trial id -> the last epoch in its run: an epoch is logged once per run, also when
        # a retried worker or a successor trial reports again epochs already logged.
        self._logged_through: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles callbacks into its experiment state; nothing there to restore

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ticket = ticket_of(trial.config)
        self._trials[trial.trial_id] = trial
        # A trial that resumes an interrupted one continues that trial's run (adopted by the
        # runner at start-up), so MLflow keeps one run per configuration.
        self._runs[trial.trial_id] = self._tracker.start_trial(
            ticket.number,
            {**params_of(trial.config), "seed": ticket.seed},
            tags={"ray_trial_id": trial.trial_id},
        )
        if ticket.replaces is not None and not ticket.resume_checkpoint:
            # Asked for again after a dead driver, with no checkpoint to continue: a run of its
            # own, and the interrupted trial's run says which run took its place.
            self._tracker.supersede(ticket.replaces, self._runs[trial.trial_id])
        logged = self._tracker.logged_through(ticket.number)
        self._logged_through[trial.trial_id] = max(
            self._logged_through.get(trial.trial_id, 0), logged
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            return
        if trial.trial_id in self._searcher.restarted and trial.trial_id not in self._restarts:
            # It was to continue an interrupted trial's run but started again from epoch 1.
            self._restarts.add(trial.trial_id)
            ticket = ticket_of(trial.config)
            run_id = self._tracker.restart_trial(
                ticket.number,
                {**params_of(trial.config), "seed": ticket.seed},
                tags={"ray_trial_id": trial.trial_id},
            )
            self._runs[trial.trial_id] = run_id
            self._logged_through[trial.trial_id] = 0
        tags: dict[str, str] = {}
        if trial.trial_id not in self._node_tagged and result.get("node_ip"):
            self._node_tagged.add(trial.trial_id)
            node = {k: result.get(k) for k in ("node_ip", "hostname", "node_id")}
            tags = {keys.trial_tag(k): str(v) for k, v in node.items() if v is not None}
        step = int(result.get("epoch", iteration))
        if step <= self._logged_through.get(trial.trial_id, 0):
            if tags:  # the epoch is in the run already (deterministic training gives it again)
                self._tracker.set_trial_tags(run_id, tags)
            return
        self._logged_through[trial.trial_id] = step
        metrics = {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS}
        # The node's tags ride with the first epoch's metrics: one MLflow request, not two.
        self._tracker.log_epoch(run_id, metrics, step=step, tags=tags)

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None or checkpoint is None:
            return
        previous = self._checkpoints.get(trial.trial_id)
        self._checkpoints[trial.trial_id] = checkpoint.path
        epoch = int((checkpoint.get_metadata() or {}).get("epoch", 0))
        self._searcher.note_checkpoint(trial.trial_id, checkpoint.path, epoch)
        files = Path(checkpoint.path) / CHECKPOINT_FILES
        if files.is_dir():
            self._tracker.log_files(run_id, files, "diagnostics")
        if previous is not None and previous != checkpoint.path:
            _delete_checkpoint(checkpoint, previous)

    def store_weights(self, trial_id: str, outcome: TrialOutcome) -> str | None:
        """Upload a COMPLETE trial's best weights into its run's ``model/`` (the searcher's
        :data:`~searchsvc.search.searcher.WeightsHook`, called before Optuna is told).

        Returns:
            The trial's :data:`keys.WEIGHTS` value: ``"stored"`` once ``log_model`` returned
            (a write MLflow could not take now is deferred by the tracker, so it counts),
            ``"missing: <why>"``; None for a trainer that keeps no weights.
        """
        if not self._has_weights:
            return None
        run_id, trial = self._runs.get(trial_id), self._trials.get(trial_id)
        checkpoint = self._checkpoints.get(trial_id)
        best = Path(checkpoint) / CHECKPOINT_BEST if checkpoint else None
        if run_id is None or trial is None:
            missing = "the trial has no MLflow run"
        elif best is None:
            missing = "the trial left no checkpoint"
        elif not best.exists():
            missing = f"its last checkpoint has no {CHECKPOINT_BEST}"
        else:
            info = {
                "trainer": self._trainer_ref,
                "params": params_of(trial.config),
                "trial_number": outcome.number,
                "best_epoch": outcome.best_epoch,
                "seed": ticket_of(trial.config).seed,
                **self._shape,
            }
            try:
                self._tracker.log_model(run_id, best, info)
                return keys.WEIGHTS_STORED
            except Exception as exc:  # refused: the trial stays COMPLETE, marked unusable
                missing = f"upload failed: {type(exc).__name__}: {first_line(exc)}"
        logger.warning(
            "trial %d: its weights are not stored (%s); no ensemble will use it",
            outcome.number, missing,
        )  # fmt: skip
        return f"{keys.WEIGHTS_MISSING}: {missing}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=True)

    def _finish(self, trial: Any, *, error: bool) -> None:
        run_id = self._runs.pop(trial.trial_id, None)
        if run_id is None:
            return
        outcome = self._searcher.outcomes.get(trial.trial_id) or TrialOutcome(
            number=ticket_of(trial.config).number,
            state=TrialState.FAIL if error else TrialState.COMPLETE,
            reason="error in the trainer" if error else "",
        )
        reason = outcome.reason
        if error:
            reason = f"error: {_error_text(trial)}"
        # The weights went up already, from store_weights, before Optuna was told COMPLETE.
        self._checkpoints.pop(trial.trial_id, None)
        self._trials.pop(trial.trial_id, None)
        summary: dict[str, Any] = {"epochs": outcome.epochs, "best_epoch": outcome.best_epoch}
        if outcome.diagnosis is not None:
            summary["diagnosis"] = outcome.diagnosis.label
            summary["diagnosis_evidence"] = outcome.diagnosis.summary()
            summary["advice"] = outcome.diagnosis.advice
        if outcome.values:
            summary["value"] = outcome.values[0]
        self._tracker.end_trial(run_id, outcome.state, reason, summary)
        self._node_tagged.discard(trial.trial_id)


def _has_weights(trainer_ref: str) -> bool:
    """Whether the trainer keeps weights; True when it cannot be imported here (the upload
    then says what is missing)."""
    from searchsvc.registry import resolve_trainer

    try:
        return bool(resolve_trainer(trainer_ref).has_weights)
    except Exception:
        logger.debug("trainer %s not importable in the driver", trainer_ref, exc_info=True)
        return True


def _delete_checkpoint(latest: Any, path: str) -> None:
    """Delete a trial's checkpoint folder ``path`` now that ``latest`` replaced it.

    Why by hand: Tune keeps one checkpoint per trial with ``CheckpointConfig(num_to_keep=1)``,
    but that setting also forces a snapshot of the whole experiment (every trial's state, so
    O(trials)) after every checkpoint of every trial: 37 ms each at 300 trials, growing with
    the study. Nothing reads an older checkpoint: Ray's retries, paused trials and a resumed
    study continue from the latest (``note_checkpoint``). Same filesystem as the latest (local
    or shared storage)."""
    try:
        latest.filesystem.delete_dir(path)
    except Exception:  # a folder left behind costs disk, not the study
        logger.debug("could not delete the replaced checkpoint %s", path, exc_info=True)


def _error_text(trial: Any) -> str:
    """The last line of the trial's traceback, which names the exception."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:500]
    return "unknown error (see the Ray logs)"
