"""The Python API: run a study, read its trials and best params, load its ensemble and
predict with it; rebuild it; report a study.

Loading only reads: a study that never ran gets a one-line
:class:`~searchsvc.errors.StudyNotRunError`, one without a completed trial an
:class:`~searchsvc.errors.EnsembleError`, and no store (``runs/<name>/``, an Optuna or MLflow
SQLite file) is created on the way.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from searchsvc.ensemble.members import load_members_dir
from searchsvc.ensemble.predictor import Ensemble
from searchsvc.errors import EnsembleError, first_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    import pandas as pd

    from searchsvc.ensemble.summary import EnsembleSummary
    from searchsvc.execution.runner import StudyResult
    from searchsvc.reconcile import Reconciliation
    from searchsvc.study_run import RunOutcome, StudyRun

__all__ = [
    "SyncResult", "best_params", "load_ensemble", "rebuild_ensemble", "report_study", "run",
    "sync_study", "trials",
]  # fmt: skip

logger = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


def run(
    path: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> StudyResult:
    """Run (or resume) the study of a study file, as ``searchsvc run`` does.

    Args:
        path: the study file.
        overrides: key path -> value set in the file before validation, as ``--set`` does
            (``{"budget.n_trials": 3}``).
        options: those of :func:`searchsvc.execution.runner.run_study` (``n_trials``,
            ``tracking_uri``, ``storage``, ``address``, ``workdir``, ``build_ensemble``, ...).

    Raises:
        StudySpecError: the file, an override or an option is invalid (nothing started).
    """
    from searchsvc.execution.runner import run_study
    from searchsvc.study.loader import load_study

    return run_study(load_study(Path(path), overrides=overrides), **options)


def trials(
    path: str | os.PathLike[str],
    *,
    states: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The trials of a study that has run, one row each (``searchsvc trials``; columns in
    :func:`searchsvc.inspect.trials.trials_table`); ``states`` keeps only those states.

    Raises:
        StudyNotRunError: the study has not run yet (nothing is created).
    """
    from searchsvc.inspect.trials import parse_states, trials_table

    return trials_table(_target(path, overrides), parse_states(states))


def best_params(
    path: str | os.PathLike[str], *, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The params of the study's best trial (with several objectives, the Pareto trial best
    by the first objective), the file's constants included (``searchsvc best``).

    Raises:
        StudyNotRunError: the study has not run yet.
        SearchsvcError: no trial has completed.
    """
    from searchsvc.inspect.best import best_trials

    return best_trials(_target(path, overrides))[0].params


def _target(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None) -> Any:
    from searchsvc.inspect.target import target_of_run
    from searchsvc.study.loader import load_study
    from searchsvc.study_run import StudyRun

    study = load_study(Path(path), check_names=False, overrides=overrides)
    return target_of_run(StudyRun.prepare(study))


def load_ensemble(
    source: str | os.PathLike[str],
    *,
    device: str = "cpu",
    tracking_uri: str | None = None,
) -> Ensemble:
    """The ensemble of a study (its registered ``champion``) or of an MLflow model URI.

    Args:
        source: a study file (``studies/mnist.yaml``) or a model URI such as
            ``models:/mnist-mlp@champion``, ``models:/mnist-mlp/3`` or ``runs:/<id>/ensemble``.
        device: where the member networks run (``cpu``, ``cuda:0``).
        tracking_uri: the MLflow tracking URI for a model URI (default: the study's, or
            ``MLFLOW_TRACKING_URI``).

    Returns:
        The ensemble; its ``predict_proba`` takes float features scaled like the training
        data (MNIST: pixels / 255).

    Raises:
        StudyNotRunError: the study has not run yet.
        EnsembleError: the study has no completed trial or no registered ensemble yet, the
            MLflow store does not exist, or the model is not a searchsvc ensemble.
        StudySpecError: the study file is missing or invalid.

    Example::

        ens = load_ensemble("studies/mnist.yaml")
        probs = ens.predict_proba(x)        # (n, classes)
        labels = ens.predict(x)
        ens.members                         # trials and weights
    """
    import mlflow

    text = os.fspath(source)
    study_file: str | None = None
    resolver = None
    if text.startswith(("models:/", "runs:/")):
        uri = text
    else:
        from searchsvc.registry import resolve_trainer
        from searchsvc.study.loader import load_study
        from searchsvc.study_run import StudyRun

        study_file = text
        run = StudyRun.prepare(load_study(Path(text), check_names=False))
        tracking_uri = tracking_uri or run.paths.tracking_uri
        _check_study_has_trials(run)
        uri = f"models:/{run.spec.name}@champion"
        # A trainer module beside the study file imports from there, as in `searchsvc run`.
        resolver = functools.partial(resolve_trainer, search_path=run.search_path)
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    _check_tracking_store_exists(tracking_uri, study_file or uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_uri(uri, tracking_uri), tracking_uri=tracking_uri
        )
    except Exception as exc:  # MLflow raises several types; one line naming the URI is enough
        first = first_line(exc) or type(exc).__name__
        if study_file is not None and _is_missing_resource(exc):
            # Trials completed, but the ensemble step never registered a model.
            raise EnsembleError(
                f"{study_file}: no ensemble yet: no registered model {uri} in {tracking_uri} "
                f"(run `searchsvc ensemble {study_file}`)"
            ) from None
        raise EnsembleError(f"cannot load ensemble {uri} from {tracking_uri}: {first}") from None
    members = Path(local) / "artifacts" / "members"
    if not members.is_dir():
        raise EnsembleError(f"{uri} is not a searchsvc ensemble (no artifacts/members)")
    return load_members_dir(members, device=device, resolver=resolver)


def rebuild_ensemble(
    run: StudyRun,
    *,
    method: str | None = None,
    size: int | None = None,
    candidates: int | None = None,
) -> tuple[EnsembleSummary | None, RunOutcome]:
    """Build a study's ensemble again (``searchsvc ensemble``); registers it if better.

    ``run`` must have its study opened (:meth:`StudyRun.open_existing`). The parent run is
    RUNNING while the ensemble is built, then FINISHED, FAILED or KILLED.

    Returns:
        The ensemble summary (None if Ctrl-C or SIGTERM stopped it) and how the run ended.
    """
    from searchsvc.ensemble.build import build_study_ensemble

    summary = None
    with run.lifecycle() as outcome:
        run.enter("loading the data")
        run.load_data()
        run.enter("opening the MLflow parent run")
        run.open_tracking(tidy=False)
        run.enter("building the ensemble")
        summary = build_study_ensemble(run, method=method, size=size, candidates=candidates)
    return summary, outcome


def report_study(run: StudyRun, *, group_by: str | None = None) -> tuple[Path | None, RunOutcome]:
    """Write a study's HTML report (``searchsvc report``) and log it to its parent run.

    Returns:
        The report's ``index.html`` (None if Ctrl-C or SIGTERM stopped it) and how it ended.
    """
    from searchsvc.report.build import write_report

    index = None
    with run.lifecycle() as outcome:
        run.enter("writing the report")
        index = write_report(run, group_by=group_by)
    return index, outcome


def _check_study_has_trials(run: StudyRun) -> None:
    """Raises unless the study's Optuna storage holds a completed trial; creates nothing.

    Raises:
        StudyNotRunError: the study has not run yet.
        EnsembleError: it ran, but no trial completed.
    """
    from searchsvc.search.storage import count_trials

    counts = count_trials(run.open_existing())
    if counts.complete == 0:
        seen = (
            f"{counts.pruned} pruned, {counts.failed} failed, {counts.interrupted} "
            f"interrupted, {counts.running} running"
        )
        raise EnsembleError(
            f"{run.where}: study {run.spec.name!r} has no ensemble yet: no completed trials "
            f"({seen}) (run `searchsvc run {run.where}` first)"
        )


def _check_tracking_store_exists(tracking_uri: str, what: str) -> None:
    """Raises EnsembleError if ``tracking_uri`` is a SQLite file that does not exist.

    MLflow would create an empty store there (and report a missing model); loading only reads.
    """
    if not tracking_uri.startswith(_SQLITE):
        return
    path = Path(tracking_uri.removeprefix(_SQLITE).split("?", 1)[0])
    if not path.is_file():
        raise EnsembleError(
            f"{what}: no ensemble to load: MLflow tracking store {path} does not exist "
            f"(tracking URI {tracking_uri})"
        )


def _is_missing_resource(exc: BaseException) -> bool:
    """True for MLflow's 'not found' errors (no registered model, version or alias)."""
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


def _artifact_uri(uri: str, tracking_uri: str) -> str:
    """Resolve a registry URI (name@alias, name/version) with this tracking URI's registry.

    ``mlflow.artifacts.download_artifacts`` would consult the process-wide registry URI
    instead, so a study's embedded store could not be read without changing global state.
    """
    from mlflow.tracking import MlflowClient

    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = rest.partition("/")
    return client.get_model_version_download_uri(name, version)


@dataclass
class SyncResult:
    """What ``searchsvc sync`` did: the journaled updates it wrote, the reconciliation (None
    if stopped), the owed ensemble it built (or why not: ``ensemble_not_built``) and the
    report written again after it, and how the command ended."""

    outcome: RunOutcome
    journaled: int = 0
    reconciled: Reconciliation | None = None
    ensemble: EnsembleSummary | None = None
    ensemble_not_built: str = ""
    report: Path | None = None


def sync_study(run: StudyRun) -> SyncResult:
    """Write the MLflow updates a run journaled (``searchsvc sync``), reconcile, and build
    the ensemble a run owed.

    A run whose tracking server was unreachable past the final wait leaves its writes in
    ``<workdir>/mlflow-journal``; this makes them, in order, and checks that every finished
    trial since the last check has its MLflow run, epochs and model (``searchsvc.reconcile``).
    If that run could not build its ensemble for the same reason (study attribute
    ``ensemble_owed``), it is built and registered now. ``run`` must have its study opened
    (:meth:`StudyRun.open_existing`); the study is claimed, so no driver writes at the same
    time.
    """
    from searchsvc.ensemble.owed import build_or_owe, ensemble_owed
    from searchsvc.journal import JOURNAL_DIR, Journal
    from searchsvc.reconcile import reconcile
    from searchsvc.search.claim import StudyClaim

    with run.lifecycle() as outcome:
        result = SyncResult(outcome)
        run.enter("claiming the study")
        run.claim = StudyClaim.acquire(run.paths.storage_url, run.spec.name)
        run.enter("writing the MLflow journal")
        result.journaled = len(Journal(run.paths.workdir / JOURNAL_DIR).pending())
        run.open_tracking(tidy=False)  # replays the journal first
        run.enter("reconciling Optuna and MLflow")
        result.reconciled = reconcile(run.study, run.tracker, metric=run.spec.primary.metric)
        if ensemble_owed(run.study) and run.spec.ensemble.enabled:
            run.enter("loading the data")
            run.load_data()
            run.enter("building the owed ensemble")
            result.ensemble, result.ensemble_not_built = build_or_owe(run)
        if result.ensemble is not None:
            from searchsvc.report.build import write_report

            run.enter("writing the report")  # its ensemble section was empty
            result.report = write_report(run)
    return result
