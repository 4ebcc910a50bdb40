"""Where a study keeps its things: working folder, MLflow tracking URI, Optuna storage URL.

Defaults are embedded stores in the study's working folder (``./runs/<study name>/`` from the
current directory): ``mlflow.db`` + ``mlartifacts/`` for MLflow, ``optuna.db`` for Optuna,
``ray/`` for Ray's trial storage. Command-line options beat the study file, which beats the
environment (``MLFLOW_TRACKING_URI``, ``SEARCHSVC_STORAGE``, ``SEARCHSVC_WORKDIR``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from searchsvc.errors import StudySpecError
from searchsvc.settings import Settings
from searchsvc.study.spec import StudySpec
from searchsvc.study.urls import check_storage_url, check_tracking_uri

__all__ = ["StudyPaths", "resolve_paths"]


@dataclass(frozen=True)
class StudyPaths:
    workdir: Path
    tracking_uri: str
    storage_url: str
    ray_storage: Path
    artifact_location: str | None  # None: the tracking server decides

    @property
    def ui_command(self) -> str:
        """The command that opens these results in the MLflow UI."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {self.tracking_uri}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    def runs_view(self, experiment_id: str) -> str:
        """The UI's address of the experiment's training runs. MLflow 3.17's UI opens an
        experiment on the page of a global GenAI / model-training switch (GenAI unless the
        browser chose otherwise), so the address names the model-training side."""
        remote = self.tracking_uri.startswith(("http://", "https://"))
        base = self.tracking_uri.rstrip("/") if remote else "http://127.0.0.1:5000"  # its default
        return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def resolve_paths(
    spec: StudySpec,
    *,
    tracking_uri: str | None = None,
    storage: str | None = None,
    workdir: str | Path | None = None,
    settings: Settings | None = None,
) -> StudyPaths:
    """The study's locations, all absolute (Ray trials run in their own working folders).

    ``settings``: the environment as the command read it (default: read now).
    """
    settings = settings if settings is not None else Settings.from_env()
    base = workdir or spec.workdir or settings.workdir
    folder = Path(base) if base else Path("runs") / spec.name
    folder = folder.expanduser().resolve()
    tracking = _given("tracking_uri", tracking_uri, spec, settings, check_tracking_uri)
    storage_url = _given("storage", storage, spec, settings, check_storage_url)
    tracking = tracking or f"sqlite:///{folder / 'mlflow.db'}"
    storage_url = storage_url or f"sqlite:///{folder / 'optuna.db'}"
    remote = tracking.startswith(("http://", "https://", "databricks"))
    artifacts = None if remote else (folder / "mlartifacts").as_uri()
    return StudyPaths(
        workdir=folder,
        tracking_uri=_absolute_sqlite(tracking),
        storage_url=_absolute_sqlite(storage_url),
        ray_storage=folder / "ray",
        artifact_location=artifacts,
    )


# The environment variable behind each location a study file may name.
_VARIABLE = {"tracking_uri": "MLFLOW_TRACKING_URI", "storage": "SEARCHSVC_STORAGE"}


def _given(
    key: str,
    option: str | None,
    spec: StudySpec,
    settings: Settings,
    check: Callable[[str], str],
) -> str | None:
    """Location ``key`` from the first place that gives it (its command-line option, the study
    file, the environment), checked; a bad one names where it came from (nothing starts)."""
    sources = (
        (f"--{key.replace('_', '-')}", option),
        (key, getattr(spec, key)),
        (_VARIABLE[key], getattr(settings, key)),
    )
    for origin, value in sources:
        if value:
            try:
                return check(value)
            except ValueError as exc:
                raise StudySpecError(f"{origin}: {exc}") from None
    return None


def _absolute_sqlite(url: str) -> str:
    """``sqlite:///rel.db`` resolved against the current folder, never a trial's."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url
