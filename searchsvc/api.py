"""The Python API: load a study's ensemble and predict with it.

Loading only reads: a study that never ran, or ran without completing a trial, gets a one-line
:class:`~searchsvc.errors.EnsembleError` saying so, and no store (``runs/<name>/``, an Optuna
or MLflow SQLite file) is created on the way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from searchsvc.ensemble import Ensemble, load_members_dir
from searchsvc.errors import EnsembleError, SearchsvcError

if TYPE_CHECKING:
    from searchsvc.paths import StudyPaths
    from searchsvc.spec import StudySpec

__all__ = ["load_ensemble"]

logger = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


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
        EnsembleError: the study never ran, has no completed trial or no registered ensemble
            yet, the MLflow store does not exist, or the model is not a searchsvc ensemble.
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
    if text.startswith(("models:/", "runs:/")):
        uri = text
    else:
        from searchsvc.loader import load_study
        from searchsvc.paths import resolve_paths

        study_file = text
        spec = load_study(Path(text), check_names=False).spec
        paths = resolve_paths(spec)
        tracking_uri = tracking_uri or paths.tracking_uri
        _check_study_has_trials(study_file, spec, paths)
        uri = f"models:/{spec.name}@champion"
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    _check_tracking_store_exists(tracking_uri, study_file or uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_uri(uri, tracking_uri), tracking_uri=tracking_uri
        )
    except Exception as exc:  # MLflow raises several types; one line naming the URI is enough
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
    return load_members_dir(members, device=device)


def _check_study_has_trials(study_file: str, spec: StudySpec, paths: StudyPaths) -> None:
    """Raises EnsembleError unless the study's Optuna storage holds a completed trial.

    Opens the storage with ``create=False`` (as ``searchsvc status`` does), so a study that
    never ran leaves no empty database behind.
    """
    from searchsvc.storage import count_trials, open_study

    hint = f"(run `searchsvc run {study_file}` first)"
    storage = paths.storage_url
    if storage.startswith(_SQLITE) and not Path(storage.removeprefix(_SQLITE)).exists():
        raise EnsembleError(
            f"{study_file}: study {spec.name!r} has no ensemble yet: it never ran (no Optuna "
            f"storage {storage.removeprefix(_SQLITE)}) {hint}"
        )
    try:
        study = open_study(spec, storage, create=False)
    except SearchsvcError as exc:
        if isinstance(exc.__context__, KeyError):  # the storage exists, this study is not in it
            raise EnsembleError(
                f"{study_file}: study {spec.name!r} has no ensemble yet: it never ran (not in "
                f"{storage}) {hint}"
            ) from None
        raise EnsembleError(f"{study_file}: cannot read study {spec.name!r}: {exc}") from None
    counts = count_trials(study)
    if counts.complete == 0:
        seen = (
            f"{counts.pruned} pruned, {counts.failed} failed, {counts.interrupted} "
            f"interrupted, {counts.running} running"
        )
        raise EnsembleError(
            f"{study_file}: study {spec.name!r} has no ensemble yet: no completed trials "
            f"({seen}) {hint}"
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
