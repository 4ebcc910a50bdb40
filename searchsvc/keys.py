"""Every key searchsvc writes into Optuna storage and every MLflow tag it sets, in one place.

A reader of a study (the report, ``status``, your own scripts against the stores) finds here
what each user attribute and tag holds.
"""

from __future__ import annotations

__all__ = [
    "BEST_EPOCH",
    "BUDGET",
    "CHECKPOINT",
    "DIAGNOSIS",
    "DIAGNOSIS_EVIDENCE",
    "DIVERGED",
    "ENQUEUED",
    "ENSEMBLE_OWED",
    "EPOCHS",
    "INTERRUPTED",
    "PARENT_RUN",
    "REASON",
    "RESTARTED",
    "RESUME_OF",
    "SEED_OF",
    "START_POINTS",
    "TAG_PARENT",
    "TAG_REASON",
    "TAG_RESEED",
    "TAG_RESUMED_FROM",
    "TAG_RETRAIN",
    "TAG_RETRAIN_OF",
    "TAG_EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TRAINING",
    "TAG_JOURNAL_REF",
    "TAG_RECONCILE",
    "TAG_ROLE",
    "TAG_STATE",
    "TAG_STUDY",
    "TAG_SUPERSEDED_BY",
    "TAG_TRIAL",
    "TAG_VAL_NLL",
    "WARM_FROM",
    "WEIGHTS",
    "RECONCILED_THROUGH",
    "WEIGHTS_MISSING",
    "WEIGHTS_STORED",
    "trial_tag",
]

# --------------------------------------------------------------------- Optuna study attributes

BUDGET = "budget_n_trials"
"""The trial budget of the last ``searchsvc run`` (after ``--n-trials``), for ``status``."""
PARENT_RUN = "mlflow_parent_run_id"
"""The study's MLflow parent run."""
RECONCILED_THROUGH = "reconciled_through"
"""The highest trial number whose MLflow run the last reconciliation checked."""
ENSEMBLE_OWED = "ensemble_owed"
"""Why the study's ensemble is still to build (MLflow was away when it was due); null once
built. ``searchsvc sync`` and the next ``searchsvc run`` build it."""
START_POINTS = "start_points_added"
"""True once the study file's ``enqueue:`` and ``warm_start:`` went in (done once per study)."""

# --------------------------------------------------------------------- Optuna trial attributes

CHECKPOINT = "checkpoint"
"""The trial's latest Ray checkpoint: ``{"path": folder, "epoch": n, "curves": {...}}``."""
RESUME_OF = "resume_of"
"""The interrupted trial this one continues."""
RESTARTED = "restarted"
"""True on a trial that was to continue an interrupted one but started again from epoch 1
(its checkpoint was gone or its trainer cannot resume): its values are its own."""
SEED_OF = "seed_of"
"""The trial number the seed derives from (the first of a resumed chain)."""
INTERRUPTED = "interrupted"
"""True on a trial a stopped driver left running (recorded FAIL, not counted)."""
REASON = "reason"
"""How the trial ended, in words (``early stopping``, ``diverged at epoch 3``, ...)."""
EPOCHS = "epochs"
"""Epochs the trial ran."""
BEST_EPOCH = "best_epoch"
"""The epoch whose weights are kept (and whose value Optuna was told)."""
DIAGNOSIS = "diagnosis"
"""The recipe's label (``healthy``, ``underfit``, ``overfit``, ...)."""
DIAGNOSIS_EVIDENCE = "diagnosis_evidence"
"""The numbers behind the label."""
DIVERGED = "diverged"
"""True on a trial pruned because its loss blew up."""
WEIGHTS = "weights"
"""On a COMPLETE trial whose trainer keeps weights, set before Optuna is told COMPLETE:
``"stored"`` (its best epoch's ``model/`` was written to MLflow, or journaled while MLflow was
down), or ``"missing: <why>"`` (no best weights in its last checkpoint, or the upload was
refused); the ensemble skips a trial whose weights are missing. Trials of a trainer with
``has_weights = False``, and trials finished before this key existed, have none."""
WEIGHTS_STORED = "stored"
"""The value of :data:`WEIGHTS` for a trial whose weights are stored."""
WEIGHTS_MISSING = "missing"
"""How the value of :data:`WEIGHTS` starts for a trial whose weights are not stored."""
ENQUEUED = "enqueued"
"""True on a trial whose params came from the study file's ``enqueue:``."""
WARM_FROM = "warm_start_from"
"""``"<study>#<number>"`` on a trial copied from a ``warm_start:`` study (it did not run
here: no MLflow run, not counted toward the budget, never an ensemble candidate)."""

# --------------------------------------------------------------------- MLflow tags

TAG_STUDY = "searchsvc.study"
TAG_ROLE = "searchsvc.role"  # "parent" on the study's run
TAG_TRIAL = "searchsvc.trial_number"
TAG_STATE = "searchsvc.state"  # COMPLETE | PRUNED | FAILED | RUNNING | INTERRUPTED
TAG_RESUMED_FROM = "searchsvc.resumed_from_trial"
TAG_SUPERSEDED_BY = "searchsvc.superseded_by"  # the run of a restart that did not continue this
TAG_REASON = "searchsvc.reason"
TAG_PARENT = "mlflow.parentRunId"
TAG_RECONCILE = "searchsvc.reconcile"  # what reconciliation found wrong with the run
TAG_JOURNAL_REF = "searchsvc.journal_ref"  # a trial run's placeholder, found again after a crash
TAG_VAL_NLL = "val_nll"  # on a registered ensemble's model version
# A retrained configuration's run (not a trial's: it has no trial number tag).
TAG_RETRAIN = "searchsvc.retrain"  # "reseed" or "refit"
TAG_RETRAIN_OF = "searchsvc.retrain_of"  # the trial whose params it retrained
TAG_RESEED = "searchsvc.reseed"  # a reseed's number (1, 2, ...) for that trial
# MLflow 3's UI opens an experiment on the page its kind names; with no kind it guesses, and an
# experiment with no traces gets the GenAI "Overview" page rather than the training runs.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"


def trial_tag(name: str) -> str:
    """The tag of a trial's summary field or node field: ``searchsvc.<name>`` (``epochs``,
    ``best_epoch``, ``diagnosis``, ``diagnosis_evidence``, ``advice``, ``value``,
    ``node_ip``, ``hostname``, ``node_id``)."""
    return f"searchsvc.{name}"
