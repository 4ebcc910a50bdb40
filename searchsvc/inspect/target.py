"""Which study a read command acts on: a study file (with its options) or a name in a storage.

``searchsvc trials STUDY`` and its siblings take a study file, as every command does, or
``--name N --storage URL`` for a study known only by its storage (one another tool made, or
whose file is gone). Either way the command gets one :class:`StudyTarget`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from searchsvc.errors import StudyNotRunError, StudySpecError
from searchsvc.settings import Settings
from searchsvc.study.urls import check_storage_url, check_tracking_uri

if TYPE_CHECKING:
    import optuna

    from searchsvc.study.spec import StudySpec
    from searchsvc.study_run import StudyRun

__all__ = ["StudyTarget", "target_by_name", "target_of_run"]

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class StudyTarget:
    """A study to read or delete.

    Attributes:
        name: the study's name (Optuna study, MLflow experiment, registered model).
        storage_url: the Optuna storage.
        tracking_uri: the MLflow tracking URI, or None when none is known (``--name`` alone).
        where: how messages name it (its file, else its storage URL).
        spec: the study file's spec, or None for a study known only by its storage.
        workdir: the study's folder, when a study file names it.
    """

    name: str
    storage_url: str
    tracking_uri: str | None
    where: str
    spec: StudySpec | None = None
    workdir: Path | None = None

    def open(self) -> optuna.Study:
        """The Optuna study, opened without creating anything.

        Raises:
            StudyNotRunError: the storage or the study in it does not exist.
        """
        import optuna

        from searchsvc.search.storage import study_names

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        not_run = StudyNotRunError(f"{self.where}: study {self.name!r} has not run yet")
        storage = self.storage_url
        if storage.startswith(_SQLITE) and not Path(storage.removeprefix(_SQLITE)).exists():
            raise not_run
        if self.name not in study_names(storage):
            raise not_run
        return optuna.load_study(study_name=self.name, storage=storage)

    def tracking_store_exists(self) -> bool:
        """False when there is no tracking URI or it is a SQLite file that does not exist
        (opening it would create an empty store)."""
        uri = self.tracking_uri
        if uri is None:
            return False
        return not uri.startswith(_SQLITE) or Path(uri.removeprefix(_SQLITE)).exists()


def target_of_run(run: StudyRun) -> StudyTarget:
    """The target of a study file, with the locations its command's options resolved."""
    return StudyTarget(
        name=run.spec.name, storage_url=run.paths.storage_url,
        tracking_uri=run.paths.tracking_uri, where=run.where, spec=run.spec,
        workdir=run.paths.workdir,
    )  # fmt: skip


def target_by_name(
    name: str,
    storage: str | None,
    tracking_uri: str | None = None,
    settings: Settings | None = None,
) -> StudyTarget:
    """A study known only by its name and storage (``--name N --storage URL``).

    The tracking URI is ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the
    ``mlflow.db`` beside a SQLite storage (the layout of a study's folder) when it exists.

    Raises:
        StudySpecError: no storage is given, or a URL is malformed.
    """
    settings = settings if settings is not None else Settings.from_env()
    storage = storage or settings.storage
    if not storage:
        raise StudySpecError("--name: needs --storage URL (or SEARCHSVC_STORAGE) to find it in")
    try:
        check_storage_url(storage)
    except ValueError as exc:
        raise StudySpecError(f"--storage: {exc}") from None
    tracking = tracking_uri or settings.tracking_uri
    if tracking:
        try:
            check_tracking_uri(tracking)
        except ValueError as exc:
            raise StudySpecError(f"--tracking-uri: {exc}") from None
    elif storage.startswith(_SQLITE):
        beside = Path(storage.removeprefix(_SQLITE)).resolve().parent / "mlflow.db"
        tracking = f"{_SQLITE}{beside}" if beside.exists() else None
    if storage.startswith(_SQLITE) and not storage.startswith(_SQLITE + "/"):
        storage = _SQLITE + str(Path(storage.removeprefix(_SQLITE)).resolve())
    return StudyTarget(
        name=name, storage_url=storage, tracking_uri=tracking,
        where=storage,
    )  # fmt: skip
