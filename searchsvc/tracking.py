"""MLflow tracking: one parent run per study, one child run per trial.

All writes go through one ``StudyTracker`` in the driver process (a single writer), so an
embedded SQLite store never sees concurrent writers ("database is locked"), and an
``http://`` tracking server is used the same way.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from searchsvc.errors import TrackingError
from searchsvc.spec import StudySpec

__all__ = ["StudyTracker", "MODEL_DIR", "TAG_STUDY", "TAG_TRIAL", "TAG_STATE", "TAG_REASON"]

logger = logging.getLogger(__name__)

TAG_STUDY = "searchsvc.study"
TAG_ROLE = "searchsvc.role"
TAG_TRIAL = "searchsvc.trial_number"
TAG_STATE = "searchsvc.state"
TAG_REASON = "searchsvc.reason"
TAG_PARENT = "mlflow.parentRunId"
MODEL_DIR = "model"
"""Artifact folder of a child run with ``state_dict.pt`` and ``params.json`` (best epoch)."""

_MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


class StudyTracker:
    """Writes a study's runs to MLflow through an explicit client (no global active run)."""

    def __init__(self, tracking_uri: str, *, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._artifact_location = artifact_location
        self.experiment_id = ""
        self.parent_run_id = ""
        self._trial_runs: dict[int, str] = {}

    # ----------------------------------------------------------------- study

    def start_study(self, spec: StudySpec, study_text: str) -> str:
        """Find or create the experiment and the study's parent run; returns its id."""
        try:
            experiment = self.client.get_experiment_by_name(spec.name)
            if experiment is None:
                self.experiment_id = self.client.create_experiment(
                    spec.name, artifact_location=self._artifact_location
                )
            else:
                self.experiment_id = experiment.experiment_id
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_ROLE}` = 'parent'",
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
        except Exception as exc:  # MLflow raises many types; say where it failed, once
            raise TrackingError(f"MLflow at {self.tracking_uri}: {exc}") from exc
        if runs:
            self.parent_run_id = runs[0].info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self._trial_runs = self.trial_runs()
            return self.parent_run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=spec.name,
            tags={TAG_STUDY: spec.name, TAG_ROLE: "parent", "mlflow.note.content": _note(spec)},
        )
        self.parent_run_id = run.info.run_id
        params = [Param(k, _short(v)) for k, v in _flatten(spec.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.parent_run_id, params=params[start : start + 100])
        self.client.log_text(self.parent_run_id, study_text, "study.yaml")
        return self.parent_run_id

    def end_study(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        self.client.log_batch(
            self.parent_run_id,
            metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
        )

    def set_study_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(
            self.parent_run_id, tags=[RunTag(k, _short(v)) for k, v in tags.items()]
        )

    def close_stale_trial_runs(self, live_numbers: set[int]) -> int:
        """End child runs left RUNNING by a driver that died; returns how many."""
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' and attributes.status = 'RUNNING'"
            ),
            max_results=10000,
        )
        count = 0
        for run in stale:
            number = int(run.data.tags.get(TAG_TRIAL, -1))
            if number in live_numbers:
                continue
            self.client.set_tag(run.info.run_id, TAG_STATE, "INTERRUPTED")
            self.client.set_tag(run.info.run_id, TAG_REASON, "the driver stopped mid-trial")
            self.client.set_terminated(run.info.run_id, status="KILLED")
            count += 1
        return count

    # ----------------------------------------------------------------- trials

    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The child run of trial ``number``: created once, reused if Ray retries the trial."""
        if number in self._trial_runs:
            run_id = self._trial_runs[number]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={
                TAG_PARENT: self.parent_run_id,
                TAG_TRIAL: str(number),
                TAG_STATE: "RUNNING",
                **tags,
            },
        )
        run_id = run.info.run_id
        self._trial_runs[number] = run_id
        self.client.log_batch(run_id, params=[Param(k, _short(v)) for k, v in params.items()])
        return run_id

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = _now_ms()
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def log_files(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_model(self, run_id: str, state_file: Path, info: Mapping[str, Any]) -> None:
        """Store the best epoch's weights and what rebuilds the network, under ``model/``."""
        with tempfile.TemporaryDirectory(prefix="searchsvc-model-") as folder:
            target = Path(folder)
            (target / "state_dict.pt").write_bytes(state_file.read_bytes())
            (target / "params.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            self.client.log_artifacts(run_id, folder, MODEL_DIR)

    def end_trial(self, run_id: str, state: str, reason: str, summary: Mapping[str, Any]) -> None:
        tags = [RunTag(TAG_STATE, state), RunTag(TAG_REASON, reason)]
        tags += [RunTag(f"searchsvc.{k}", _short(v)) for k, v in summary.items()]
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, status=_MLFLOW_STATUS.get(state, "FAILED"))

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> child run id, for every trial of this study in MLflow."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'",
            max_results=50000,
        )
        return {
            int(r.data.tags[TAG_TRIAL]): r.info.run_id for r in runs if TAG_TRIAL in r.data.tags
        }


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif value is not None:
            flat[name] = value
    return flat


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _note(spec: StudySpec) -> str:
    objective = ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives)
    return (
        f"{spec.description or spec.name}\n\ntrainer {spec.trainer}, dataset {spec.dataset.name}, "
        f"objective {objective}, sampler {spec.sampler.name}, scheduler {spec.scheduler.name}"
    )


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
