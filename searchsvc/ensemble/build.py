"""Build, measure and register the ensemble of a finished study.

Selection sees only the validation split; the test split is evaluated once, afterwards, for
the best single trial and the ensemble, and only reported.

The candidates are the best completed trials whose stored model loads and predicts (see
``candidates``: a bad trial is skipped and the next best takes its place); with several
objectives, the Pareto trials ordered by the first objective (``top_trials``). The "best single"
trial is the best of them by the study's primary objective; its number is recorded, and a
warning says so when the overall best trial was skipped and could not be that trial.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from searchsvc.deferred import unreachable
from searchsvc.ensemble.candidates import (
    Candidate,
    Source,
    gather_candidates,
    ranked_trials,
    trial_sources,
)
from searchsvc.ensemble.diversity import diverse_order
from searchsvc.ensemble.members import load_members_dir, write_members_dir
from searchsvc.ensemble.metrics import accuracy, log_loss, scores
from searchsvc.ensemble.predictor import Ensemble, Member, feature_range_of, member_val_probs
from searchsvc.ensemble.pyfunc import log_ensemble, set_champion_if_better
from searchsvc.ensemble.refit import RefitNote, refit_pool
from searchsvc.ensemble.reseeds import planned_reseeds
from searchsvc.ensemble.retrain_runs import reseed_sources
from searchsvc.ensemble.selection import select_members
from searchsvc.ensemble.summary import EnsembleSummary, MemberWeight, Scores, SkippedTrial
from searchsvc.errors import EnsembleError, TrackingError
from searchsvc.study.locations import StudyPaths
from searchsvc.study.spec import StudySpec
from searchsvc.study_run import StudyRun
from searchsvc.tracking import MODEL_DIR, StudyTracker
from searchsvc.trainer import Dataset

if TYPE_CHECKING:
    import optuna

__all__ = ["build_study_ensemble", "best_single_index", "ENSEMBLE_MODEL_NAME"]

logger = logging.getLogger(__name__)

ENSEMBLE_MODEL_NAME = "ensemble"


def build_study_ensemble(
    run: StudyRun,
    *,
    method: str | None = None,
    size: int | None = None,
    candidates: int | None = None,
) -> EnsembleSummary:
    """Select members among the candidates, refit them if asked, evaluate, log and register.

    Uses the run's Optuna study, tracker (on the parent run), data and trainer, as opened by
    the command. The candidates are the best trials (one per configuration cluster with
    ``choose: diverse``) and the reseeds of the best ones.

    Returns the :class:`EnsembleSummary` (also logged to the parent run as
    ``ensemble/summary.json``).

    Raises:
        EnsembleError: the study has no completed trial, or none has a stored model that loads.
        TrackingError: MLflow is unreachable (rerun ``searchsvc ensemble`` once it answers).
    """
    spec, data = run.spec, run.data
    method = method or spec.ensemble.method
    size = size or spec.ensemble.size
    ranked = ranked_trials(run.study, spec)
    if not ranked:
        raise EnsembleError(f"study {spec.name!r} has no completed trials to ensemble")
    with tempfile.TemporaryDirectory(prefix="searchsvc-ens-") as tmp:
        folder = Path(tmp)
        pool, skipped, n_trials = _gather(run, ranked, folder, candidates)
        members = [c.member for c in pool]
        # The best single is the search's own best trial (a reseed is not a trial).
        single = best_single_index(members[:n_trials], spec.primary.mode)
        _warn_if_best_is_not_single(spec, ranked[0], members[single])

        # Validation predictions of every candidate, computed once (by gather_candidates).
        val_probs = np.stack([c.val_probs for c in pool])
        weights = _registered_weights(
            select_members(method, val_probs, data.y_val, size), val_probs, data.y_val, single
        )
        final, note = pool, None
        if spec.ensemble.refit:  # after every choice; the champion decision uses val_nll below
            run.enter("refitting the ensemble's members on training + validation data")
            final, note = refit_pool(run, pool, weights, single, folder / "refit")
            if note.failed:
                logger.warning("refit failed (%s); the pre-refit members are registered",
                               note.failed)  # fmt: skip
        members_dir = _write_members(final, weights, folder / "members", spec, data)
        ensemble = load_members_dir(members_dir)
        summary = _summary(method, ensemble, weights, val_probs, final, single, data)
        summary.skipped = skipped
        summary.candidates = [c.member.trial_number for c in pool[:n_trials]]
        summary.reseeds = [c.member.key for c in pool[n_trials:]]
        if note is not None:
            _report_refit(summary, note, pool, weights, single, folder, spec, data)
        _log_to_parent(run.tracker, run.paths, spec, members_dir, data, summary)
    return summary


def _gather(
    run: StudyRun, ranked: list, folder: Path, candidates: int | None
) -> tuple[list[Candidate], list[SkippedTrial], int]:
    """The trial candidates, then the reseeds of the best trials; and how many are trials."""
    spec, tracker = run.spec, run.tracker
    runs = _trial_runs(tracker)
    if spec.ensemble.choose == "diverse":
        ranked = diverse_order(ranked, spec, candidates or spec.ensemble.candidates)
    download, trainer, data = _downloader(tracker), run.trainer, run.data
    pool, skipped = gather_candidates(
        trial_sources(ranked, runs), download, trainer, data, folder,
        candidates or spec.ensemble.candidates,
    )  # fmt: skip
    if not pool:
        raise EnsembleError(
            f"study {spec.name!r}: none of its {len(ranked)} completed trials has a stored "
            f"model that loads ({len(skipped)} skipped; see the warnings)"
        )
    n_trials = len(pool)
    if spec.ensemble.reseed:
        _, plan = planned_reseeds(run.study, spec)
        sources = _reseed_sources(tracker, [(trial.number, index) for trial, index in plan])
        reseeds, missing = gather_candidates(
            sources, download, trainer, data, folder, len(sources)
        )
        pool, skipped = pool + reseeds, skipped + missing
    return pool, skipped, n_trials


def _reseed_sources(tracker: StudyTracker, pairs: list[tuple[int, int]]) -> list[Source]:
    try:
        return reseed_sources(tracker, pairs)
    except Exception as exc:
        if unreachable(exc):
            raise TrackingError(f"tracking server unreachable: {type(exc).__name__}") from None
        raise


def _report_refit(
    summary: EnsembleSummary, note: RefitNote, pool: list[Candidate], weights: np.ndarray,
    single: int, folder: Path, spec: StudySpec, data: Dataset,
) -> None:  # fmt: skip
    """The refit's record, and the test scores of the networks the search trained (only
    reported, after every choice is made)."""
    summary.refit_failed = note.failed
    if note.failed:
        return
    summary.refit = note.members
    if data.x_test is None or data.y_test is None:
        return
    searched = load_members_dir(_write_members(pool, weights, folder / "searched", spec, data))
    summary.pre_refit_ensemble = Scores(**searched.evaluate(data.x_test, data.y_test))
    single_probs = member_val_probs([pool[single].network], data.x_test)[0]
    summary.pre_refit_best_single = Scores(**scores(single_probs, data.y_test))


def _registered_weights(
    weights: np.ndarray, val_probs: np.ndarray, y_val: np.ndarray, single: int
) -> np.ndarray:
    """What is registered: the better on validation log-loss of the selected ensemble and the
    best single trial as an ensemble of one (ties to the ensemble), so the registered model
    never loses to the study's best trial on the split that chooses."""
    selected = log_loss(np.tensordot(weights, val_probs, axes=1), y_val)
    if log_loss(val_probs[single], y_val) < selected:
        logger.info("the best single trial beats the selected ensemble; it is registered alone")
        alone = np.zeros_like(weights)
        alone[single] = 1.0
        return alone
    return weights


def _trial_runs(tracker: StudyTracker) -> dict[int, str]:
    """Trial number -> MLflow run id; an outage is said as one, not as missing models."""
    try:
        return tracker.trial_runs()
    except Exception as exc:
        if unreachable(exc):
            raise TrackingError(f"tracking server unreachable: {type(exc).__name__}") from None
        raise


def _downloader(tracker: StudyTracker) -> Callable[[str, Path], Path]:
    """A trial's stored model (``model/``) downloaded from its run into a folder."""

    def download(run_id: str, folder: Path) -> Path:
        return Path(tracker.client.download_artifacts(run_id, MODEL_DIR, str(folder)))

    return download


def _warn_if_best_is_not_single(
    spec: StudySpec, best: optuna.trial.FrozenTrial, single_member: Member
) -> None:
    """Warns when the best trial was skipped, so 'best single' is another trial."""
    if single_member.trial_number != best.number:
        # The label must not move silently: say which trial the scores belong to and why.
        logger.warning(
            "best trial %d (%s=%.6g) has no stored model that loads; 'best single' is trial "
            "%d (%s=%.6g), the best with one",
            best.number, spec.primary.metric, best.values[0],
            single_member.trial_number, spec.primary.metric, single_member.val_score,
        )  # fmt: skip


def _write_members(
    pool: list[Candidate], weights: np.ndarray, out: Path, spec: StudySpec, data: Dataset
) -> Path:
    """Writes the candidates with a positive weight as the members directory ``out``."""
    entries = [
        (dataclasses.replace(c.member, weight=float(w)), c.state_path)
        for c, w in zip(pool, weights, strict=True)
        if w > 0
    ]
    return write_members_dir(
        entries,
        out,
        trainer_ref=spec.trainer,
        n_features=data.n_features,
        n_classes=data.n_classes,
        class_names=data.class_names,
        # The range of what the networks saw (never the test split): prediction refuses
        # input far outside it, such as raw 0-255 pixels.
        feature_range=feature_range_of(data.x_train, data.x_val),
    )


def _summary(
    method: str,
    ensemble: Ensemble,
    weights: np.ndarray,
    val_probs: np.ndarray,
    pool: list[Candidate],
    single: int,
    data: Dataset,
) -> EnsembleSummary:
    """Validation scores of the ensemble and the best single trial; test scores if any."""
    single_member = pool[single].member
    val_ensemble = np.tensordot(weights / weights.sum(), val_probs, axes=1)
    summary = EnsembleSummary(
        method=method,
        members=[MemberWeight(m.trial_number, m.weight, m.reseed) for m in ensemble.members],
        val_nll=log_loss(val_ensemble, data.y_val),
        val_accuracy=accuracy(val_ensemble, data.y_val),
        best_single_trial=single_member.trial_number,
        best_single_val_nll=log_loss(val_probs[single], data.y_val),
    )
    if np.count_nonzero(weights) == 1 and weights[single] > 0:
        summary.registered = "best_single"
    if data.x_test is not None and data.y_test is not None:
        single_probs = member_val_probs([pool[single].network], data.x_test)[0]
        summary.best_single = Scores(**scores(single_probs, data.y_test))
        summary.ensemble = Scores(**ensemble.evaluate(data.x_test, data.y_test))
    return summary


def best_single_index(members: list[Member], mode: str) -> int:
    """Index of the member with the best ``val_score`` (the primary objective) for ``mode``.

    Ties go to the earliest member. Members without a score never win over one with a score.

    Raises:
        EnsembleError: ``members`` is empty or ``mode`` is not ``min``/``max``.
    """
    if not members:
        raise EnsembleError("no candidates to pick the best single trial from")
    if mode not in ("min", "max"):
        raise EnsembleError(f"objective mode must be 'min' or 'max'; got {mode!r}")
    sign = -1.0 if mode == "max" else 1.0  # min() below: the best first

    def key(index: int) -> tuple[bool, float, int]:
        score = members[index].val_score
        unusable = score is None or not math.isfinite(score)
        return (unusable, 0.0 if unusable else sign * float(score), index)

    return min(range(len(members)), key=key)


def _log_to_parent(
    tracker: StudyTracker,
    paths: StudyPaths,
    spec: StudySpec,
    members_dir: Path,
    data: Dataset,
    summary: EnsembleSummary,
) -> None:
    metrics = {
        "ensemble_val_nll": summary.val_nll,
        "ensemble_val_accuracy": summary.val_accuracy,
    }
    tested = (
        ("best_single", summary.best_single), ("ensemble", summary.ensemble),
        ("pre_refit_best_single", summary.pre_refit_best_single),
        ("pre_refit_ensemble", summary.pre_refit_ensemble),
    )  # fmt: skip
    for label, test_scores in tested:
        for name, value in dataclasses.asdict(test_scores).items() if test_scores else ():
            if math.isfinite(value):
                metrics[f"test_{name}_{label}"] = value
    tracker.log_study_metrics(metrics)
    # log_model needs the fluent API's active run. Set the URI only for this block: MLflow's
    # setters also export MLFLOW_TRACKING_URI, which would leak into later studies and
    # subprocesses. The registry follows the tracking URI when it is not set on its own.
    with _use_tracking_uri(paths.tracking_uri), mlflow.start_run(run_id=tracker.parent_run_id):
        info = log_ensemble(
            members_dir,
            name=ENSEMBLE_MODEL_NAME,
            registered_model_name=spec.name,
            input_example=data.x_val[:5],
            val_nll=summary.val_nll,
        )
    version = info.registered_model_version
    moved = set_champion_if_better(tracker.client, spec.name, version, summary.val_nll)
    summary.version, summary.champion = version, moved
    summary.model_uri = (
        f"models:/{spec.name}@champion" if moved else f"models:/{spec.name}/{version}"
    )
    with tempfile.TemporaryDirectory(prefix="searchsvc-summary-") as folder:
        (Path(folder) / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
        tracker.log_files(tracker.parent_run_id, Path(folder), "ensemble")  # the write path
