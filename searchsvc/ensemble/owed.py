"""An ensemble the search earned but MLflow could not take yet: recorded as owed, built later.

A run whose tracking server is away when the search ends (or whose final wait expires with
writes still journaled) cannot read the trials' models or register the ensemble. Rather than
leave the user to notice, the study records the ensemble as owed (Optuna study attribute
:data:`searchsvc.keys.ENSEMBLE_OWED`, the reason in words); ``searchsvc sync`` builds it once
MLflow answers, and so does the next ``searchsvc run``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from searchsvc import keys
from searchsvc.errors import SearchsvcError, TrackingError, first_line

if TYPE_CHECKING:
    import optuna

    from searchsvc.ensemble.summary import EnsembleSummary
    from searchsvc.study_run import StudyRun

__all__ = ["build_or_owe", "ensemble_owed"]

logger = logging.getLogger(__name__)


def ensemble_owed(study: optuna.Study) -> str | None:
    """Why the study's ensemble is owed (MLflow was away when it was due), or None."""
    return study.user_attrs.get(keys.ENSEMBLE_OWED) or None


def build_or_owe(run: StudyRun) -> tuple[EnsembleSummary | None, str]:
    """Build, log and register the study's ensemble, or say in one line why not.

    An ensemble MLflow cannot take now (unreachable, or updates still journaled) is recorded
    as owed; one that is built clears that record. Any other failure is said and not owed
    (building again would fail the same way until the user acts).

    Returns:
        The summary (None when not built) and the line to show ("" when built).
    """
    from searchsvc.ensemble.build import build_study_ensemble

    sync = f"`searchsvc sync {run.where}` builds it when MLflow answers (so does the next run)"
    again = f"rerun `searchsvc ensemble {run.where}` to build it"
    pending = run.tracker.pending
    if pending:  # the models are in the journal, not the store: a build would miss them
        return None, _owe(run, f"{pending} MLflow update(s) still journaled", sync)
    try:
        summary = build_study_ensemble(run)
    except TrackingError as exc:
        return None, _owe(run, str(exc), sync)
    except SearchsvcError as exc:
        return None, f"no ensemble: {exc}; {again}"
    except Exception as exc:
        logger.debug("the ensemble build failed", exc_info=True)  # the traceback, with -v
        failed = f"{type(exc).__name__}: {first_line(exc)}"
        return None, f"no ensemble: the build failed ({failed}); {again}"
    if ensemble_owed(run.study):
        run.study.set_user_attr(keys.ENSEMBLE_OWED, None)
    return summary, ""


def _owe(run: StudyRun, why: str, then: str) -> str:
    run.study.set_user_attr(keys.ENSEMBLE_OWED, why)
    return f"no ensemble yet: {why}; {then}"
