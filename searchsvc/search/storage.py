"""The persistent Optuna study: open or create it, recover after a crash, count its trials."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial

from searchsvc import keys
from searchsvc.errors import TrackingError
from searchsvc.study.spec import StudySpec

__all__ = [
    "study_names",
    "StudyCounts",
    "TrialSummary",
    "count_trials",
    "open_study",
    "pareto_trials",
    "recover_interrupted",
    "resumed_trials",
    "retrying",
    "top_trials",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def retrying(call: Callable[[], _T], what: str) -> _T:
    """Run a storage call, retrying when the database connection drops (about 30 s in all).

    A dropped PostgreSQL connection (server restart, network blip) must not kill a study that
    has hours of trials behind it; the engine's pool_pre_ping reconnects on the next try.
    Optuna's RDB storage wraps every SQLAlchemy error in ``StorageInternalError`` (after rolling
    the session back), so the cause is what tells a transient failure from a real one.
    """
    for attempt, pause in enumerate((*_BACKOFF_S, None), start=1):
        try:
            return call()
        except Exception as exc:
            if not _is_transient(exc) or pause is None:
                raise
            cause = exc.__cause__ if _is_storage_internal(exc) and exc.__cause__ else exc
            logger.warning(
                "Optuna storage: %s failed (%s); retry %d in %.1f s",
                what, str(cause).splitlines()[0][:200], attempt, pause,
            )  # fmt: skip
            time.sleep(pause)
    raise AssertionError("unreachable")


def _is_storage_internal(exc: BaseException) -> bool:
    return isinstance(exc, optuna.exceptions.StorageInternalError)


def _is_transient(exc: BaseException) -> bool:
    """A lost or refused connection (or a locked SQLite file), not a bad statement.

    ``PendingRollbackError`` counts too: it is what the next statement of a session raises
    after its connection was lost mid-transaction. Optuna's ``_get_trials`` catches the
    dropped connection's ``OperationalError`` as "too many variables" and falls back to a
    second query in the same session, so that is the error a dropped connection surfaces as.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

    if _is_storage_internal(exc):
        exc = exc.__cause__  # type: ignore[assignment]
    if isinstance(exc, OperationalError | PendingRollbackError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def open_study(spec: StudySpec, storage_url: str, *, create: bool = True) -> optuna.Study:
    """The study named ``spec.name`` in ``storage_url`` (created on first use)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create and storage_url.startswith("sqlite:///"):
        # Opening a missing SQLite file would create an empty database: say there is none.
        if not Path(storage_url.removeprefix("sqlite:///")).exists():
            raise TrackingError(
                f"study {spec.name!r} has not run yet: no {storage_url.removeprefix('sqlite:///')}"
            )
    try:
        storage = _rdb_storage(storage_url)
        if not create:
            return optuna.load_study(study_name=spec.name, storage=storage)
        directions = [o.direction for o in spec.objectives]
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            directions=directions,
            load_if_exists=True,
        )
    except KeyError:
        raise TrackingError(f"no study {spec.name!r} in {storage_url} yet") from None
    except Exception as exc:
        raise TrackingError(f"Optuna storage {storage_url}: {exc}") from exc
    if [d.name.lower() for d in study.directions] != [d for d in directions]:
        raise TrackingError(
            f"study {spec.name!r} in {storage_url} was created with directions "
            f"{[d.name.lower() for d in study.directions]}, the file now asks for {directions}"
        )
    study.set_metric_names([o.metric for o in spec.objectives])
    return study


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on ``url``. A new database's schema may be being created by another
    process at this moment (a `searchsvc status` while the first run starts): the loser of
    that race sees a unique violation on Optuna's version table or a table that "already
    exists", and tries again once the other has finished."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    from searchsvc.sqlite_stores import tune_sqlite_store

    tune_sqlite_store(url)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except (IntegrityError, OperationalError) as exc:
            racing = isinstance(exc, IntegrityError) or "already exists" in str(exc)
            if not racing or attempt == 4:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    # Drop dead pooled connections before use, so a database restart costs one reconnect.
    return {"pool_pre_ping": True}


@dataclass
class StudyCounts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    interrupted: int = 0
    diverged: int = 0
    warm: int = 0  # COMPLETE trials copied from a warm_start study (not run here)
    diagnoses: dict[str, int] = field(default_factory=dict)  # finished trials per diagnosis

    @property
    def finished(self) -> int:
        """Trials that count toward the budget (interrupted ones are run again)."""
        return self.complete + self.pruned + self.failed


def count_trials(source: optuna.Study | Iterable[FrozenTrial]) -> StudyCounts:
    """Trials by state and finished trials by diagnosis, of a study or of its trials.

    The one place that counts: ``status``, the run's summary and the report all read it.
    """
    trials = source.get_trials(deepcopy=False) if isinstance(source, optuna.Study) else source
    counts = StudyCounts()
    for trial in trials:
        state = trial.state
        if keys.WARM_FROM in trial.user_attrs:  # history from another study: not this budget's
            counts.warm += 1
            continue
        label = trial.user_attrs.get(keys.DIAGNOSIS)
        if label and not trial.user_attrs.get(keys.INTERRUPTED):
            counts.diagnoses[label] = counts.diagnoses.get(label, 0) + 1
        if state == optuna.trial.TrialState.COMPLETE:
            counts.complete += 1
        elif state == optuna.trial.TrialState.PRUNED:
            counts.pruned += 1
            counts.diverged += bool(trial.user_attrs.get(keys.DIVERGED))
        elif state == optuna.trial.TrialState.FAIL:
            if trial.user_attrs.get(keys.INTERRUPTED):
                counts.interrupted += 1
            else:
                counts.failed += 1
        elif state == optuna.trial.TrialState.RUNNING:
            counts.running += 1
        elif state == optuna.trial.TrialState.WAITING:
            counts.waiting += 1
    return counts


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a driver that is gone as FAIL (interrupted), and ask for
    each configuration again, to resume from the trial's last checkpoint when there is one.

    Only one driver runs a study at a time, so at start-up every RUNNING trial is an orphan.
    They do not count toward the budget. The new trial carries ``resume_of`` (the orphan's
    number), the checkpoint and its epoch, and the seed origin, as user attributes.
    """
    orphans = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING
    ]
    for frozen in orphans:
        trial = optuna.trial.Trial(study, frozen._trial_id)
        trial.set_user_attr(keys.INTERRUPTED, True)
        trial.set_user_attr(keys.REASON, "the driver stopped mid-trial")
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
        attrs: dict[str, Any] = {
            keys.RESUME_OF: frozen.number,
            keys.SEED_OF: frozen.user_attrs.get(keys.SEED_OF, frozen.number),
        }
        checkpoint = frozen.user_attrs.get(keys.CHECKPOINT)
        if checkpoint and Path(checkpoint["path"]).is_dir():
            attrs[keys.CHECKPOINT] = checkpoint
        # Ask for the same configuration again, so the budget is spent as the sampler chose.
        study.enqueue_trial(frozen.params, user_attrs=attrs, skip_if_exists=False)
    if orphans:
        logger.info(
            "recovered %d interrupted trial(s): %s", len(orphans), [t.number for t in orphans]
        )
    return [t.number for t in orphans]


def resumed_trials(study: optuna.Study) -> dict[int, int]:
    """Interrupted trial number -> the number of the waiting trial that resumes it from a
    checkpoint. One whose checkpoint is gone starts from epoch 1 and is not listed: its epochs
    belong in a run of their own."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return {
        t.user_attrs[keys.RESUME_OF]: t.number
        for t in waiting
        if keys.RESUME_OF in t.user_attrs and t.user_attrs.get(keys.CHECKPOINT)
    }


@dataclass(frozen=True)
class TrialSummary:
    """One of a study's best trials, as the run's summary and ``status`` show it."""

    number: int
    values: tuple[float, ...]
    params: dict[str, Any]
    epochs: int | None
    best_epoch: int | None

    @property
    def value(self) -> float:
        """The value of the primary objective."""
        return self.values[0]

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialSummary:
        return cls(
            trial.number, tuple(trial.values), dict(trial.params),
            trial.user_attrs.get(keys.EPOCHS), trial.user_attrs.get(keys.BEST_EPOCH),
        )  # fmt: skip


def top_trials(
    study: optuna.Study, spec: StudySpec, n: int | None
) -> list[optuna.trial.FrozenTrial]:
    """The best ``n`` completed trials (all of them for None), best first.

    One objective: by its value. Several: the Pareto front (Optuna's ``best_trials``: no
    other completed trial is at least as good on every objective and better on one), ordered
    by the first objective; the summary, ``status``, the report and the ensemble all rank
    by this one function.
    """
    if len(spec.objectives) > 1:
        return pareto_trials(study, spec.primary.maximize)[:n]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    reverse = spec.primary.maximize
    return sorted(complete, key=lambda t: t.values[0], reverse=reverse)[:n]


def pareto_trials(study: optuna.Study, maximize_first: bool) -> list[optuna.trial.FrozenTrial]:
    """A multi-objective study's Pareto trials, best first by the first objective (ties
    broken by trial number, so the order is stable)."""
    front = retrying(lambda: study.best_trials, "best_trials")
    sign = -1.0 if maximize_first else 1.0
    return sorted(front, key=lambda t: (sign * t.values[0], t.number))


def study_names(storage: str) -> list[str]:
    """The names of the studies in an Optuna storage (raises TrackingError if unreachable)."""
    try:
        return optuna.study.get_all_study_names(storage=storage)
    except Exception as exc:
        raise TrackingError(f"Optuna storage {storage}: {exc}") from exc
