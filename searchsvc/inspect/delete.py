"""Deleting a study (``searchsvc delete``): its Optuna study, MLflow experiment, registered
model and folder. First a plan of what exists (shown before asking), then the deletion.

MLflow only marks an experiment deleted and keeps its name taken, so a later study of the same
name could not create its experiment. The experiment is therefore renamed
``<name>-deleted-<unix time>`` before it is deleted: a later study of that name starts a fresh
experiment, and the old one stays restorable from MLflow's deleted experiments until
``mlflow gc`` removes it for good.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from searchsvc.errors import StudyNotRunError
from searchsvc.inspect.target import StudyTarget

__all__ = ["DeletionPlan", "delete_study", "plan_deletion"]

logger = logging.getLogger(__name__)

# What searchsvc writes into a study's folder; anything else there is not ours to delete.
_OURS = ("optuna.db", "mlflow.db", "mlartifacts", "ray", "report", "ensemble")


@dataclass(frozen=True)
class DeletionPlan:
    """What exists of a study, so what ``delete_study`` will remove."""

    target: StudyTarget
    optuna_study: bool
    experiment_id: str | None
    registered_model: bool
    folder: Path | None

    def lines(self) -> list[str]:
        """One line per thing to delete, in words."""
        t = self.target
        found = []
        if self.optuna_study:
            found.append(f"Optuna study {t.name!r} in {t.storage_url}")
        if self.experiment_id:
            found.append(
                f"MLflow experiment {t.name!r} (id {self.experiment_id}) in {t.tracking_uri}"
            )
        if self.registered_model:
            found.append(f"registered model {t.name!r} in {t.tracking_uri}")
        if self.folder:
            found.append(f"folder {self.folder}")
        return found


def plan_deletion(target: StudyTarget) -> DeletionPlan:
    """What exists of ``target``; reads only.

    Raises:
        StudyNotRunError: nothing of the study exists.
    """
    from searchsvc.search.storage import study_names

    storage = target.storage_url
    exists = (
        not storage.startswith("sqlite:///") or Path(storage.removeprefix("sqlite:///")).exists()
    )
    in_optuna = exists and target.name in study_names(storage)
    experiment_id, model = None, False
    if target.tracking_store_exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
        experiment = client.get_experiment_by_name(target.name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            experiment_id = experiment.experiment_id
        model = bool(client.search_registered_models(filter_string=f"name = '{target.name}'"))
    folder = target.workdir if target.workdir is not None and target.workdir.is_dir() else None
    plan = DeletionPlan(target, in_optuna, experiment_id, model, folder)
    if not plan.lines():
        raise StudyNotRunError(f"{target.where}: study {target.name!r} has nothing to delete")
    return plan


def delete_study(plan: DeletionPlan) -> list[str]:
    """Delete what ``plan`` found: MLflow first, then Optuna, then the folder.

    Returns:
        One line per thing deleted (or kept, for a folder holding files not searchsvc's).
    """
    t = plan.target
    done = []
    if plan.experiment_id or plan.registered_model:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=t.tracking_uri, registry_uri=t.tracking_uri)
        if plan.registered_model:
            client.delete_registered_model(t.name)
            done.append(f"deleted registered model {t.name!r}")
        if plan.experiment_id:
            tomb = f"{t.name}-deleted-{int(time.time())}"
            client.rename_experiment(plan.experiment_id, tomb)  # frees the name (see above)
            client.delete_experiment(plan.experiment_id)
            done.append(f"deleted MLflow experiment {t.name!r} (kept as deleted {tomb!r})")
    if plan.optuna_study:
        import optuna

        optuna.delete_study(study_name=t.name, storage=t.storage_url)
        done.append(f"deleted Optuna study {t.name!r}")
    if plan.folder is not None:
        done.append(_remove_folder(plan.folder))
    return done


def _remove_folder(folder: Path) -> str:
    """Remove what searchsvc wrote into the folder, and the folder once nothing else is left."""
    for entry in folder.iterdir():
        if entry.name.split("-", 1)[0] in _OURS or entry.name.startswith(_OURS + (".report",)):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if any(folder.iterdir()):
        return f"kept folder {folder}: it holds files searchsvc did not write"
    folder.rmdir()
    return f"deleted folder {folder}"
