"""MLflow tracking: one parent run per study, one child run per trial.

All writes go through one ``StudyTracker`` in the driver process (a single writer), so an
embedded SQLite store never sees concurrent writers ("database is locked"), and an
``http://`` tracking server is used the same way.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param, Run
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from searchsvc import keys
from searchsvc.deferred import DeferredWrites
from searchsvc.errors import TrackingError, first_line
from searchsvc.journal import Journal
from searchsvc.redaction import scrub
from searchsvc.run_handover import RunHandover
from searchsvc.sqlite_stores import tune_sqlite_store
from searchsvc.study.spec import StudySpec
from searchsvc.tracking_ops import apply_record, batch, is_placeholder

__all__ = ["StudyTracker", "MODEL_DIR"]

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
"""Artifact folder of a child run with ``state_dict.pt`` and ``params.json`` (best epoch)."""

_MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_STATE_TAG = {"FAIL": "FAILED"}  # the tag speaks MLflow's word for a failure


class StudyTracker(RunHandover):
    """Writes a study's runs to MLflow through an explicit client (no global active run).

    Trial writes survive a tracking server that is down for a while: they are kept in order in
    memory (files copied to a spool folder) and written when the server answers again, so the
    study goes on. ``flush`` at the end waits for the server, bounded by ``wait_s``.
    """

    def __init__(self, tracking_uri: str, *, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        tune_sqlite_store(tracking_uri)  # before MLflow's engine makes its first connection
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._artifact_location = artifact_location
        self.experiment_id = ""
        self.parent_run_id = ""
        self._trial_runs: dict[int, str] = {}
        self._logged_through: dict[int, int] = {}  # adopted trial -> last epoch in its run
        self._real_ids: dict[str, str] = {}  # placeholder run id -> MLflow run id
        self._deferred = DeferredWrites(tracking_uri, lambda record: apply_record(self, record))

    # ----------------------------------------------------------------- the write path

    def resolve_run(self, ref: str) -> str:
        """The MLflow run id of ``ref``: an id, or the placeholder of a trial run created
        since (here, or by an earlier driver: found by its ``searchsvc.journal_ref`` tag)."""
        if not is_placeholder(ref):
            return ref
        if ref not in self._real_ids and not self.known_ref(ref, look_in_mlflow=True):
            raise TrackingError(f"no MLflow run was created for {ref}")
        return self._real_ids[ref]

    def known_ref(self, ref: str, *, look_in_mlflow: bool) -> bool:
        """True if placeholder ``ref``'s run exists (noted here, or found in MLflow)."""
        if ref in self._real_ids:
            return True
        if not look_in_mlflow:
            return False
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{keys.TAG_JOURNAL_REF}` = '{ref}'",
            max_results=1,
        )  # fmt: skip
        if found:
            self._real_ids[ref] = found[0].info.run_id
        return bool(found)

    def created(self, ref: str, number: int, run_id: str) -> None:
        """Notes that placeholder ``ref`` (trial ``number``'s run) is MLflow run ``run_id``."""
        self._real_ids[ref] = run_id
        if self._trial_runs.get(number) == ref:
            self._trial_runs[number] = run_id

    def write(self, record: dict[str, Any], what: str) -> str:
        """The one path of every write: ``"written"``, ``"deferred"`` (journaled) or
        ``"refused"`` (logged and counted in ``lost_writes``)."""
        return self._deferred.write(record, what)

    def use_journal(self, folder: Path) -> int:
        """Journal deferred writes in ``folder``; returns how many an earlier driver left
        there (written first, in order, by the next flush)."""
        return self._deferred.use_journal(Journal(folder))

    def flush(self, wait_s: float = 300.0) -> bool:
        """Wait (bounded) until every deferred write is in MLflow; False when ``wait_s``
        passed first: the writes stay journaled for the next run or ``searchsvc sync``."""
        return self._deferred.flush(wait_s)

    def flush_now(self) -> bool:
        """One attempt to write what is deferred, now; True when nothing is left."""
        return self._deferred.flush_now()

    @property
    def journal_path(self) -> Path | None:
        """Where deferred writes are journaled (None: in memory only)."""
        journal = self._deferred.journal
        return journal.path if journal is not None else None

    @property
    def pending(self) -> int:
        """Writes still waiting for MLflow to answer."""
        return self._deferred.pending

    @property
    def lost_writes(self) -> int:
        """Writes MLflow refused (not an outage): logged, never retried."""
        return self._deferred.lost_writes

    # ----------------------------------------------------------------- study

    def find_parent(self, name: str, parent_run_id: str | None = None) -> bool:
        """Point this tracker at study ``name``'s experiment and parent run, creating nothing.

        ``parent_run_id`` (the id the Optuna study recorded) is tried first; otherwise the
        oldest run tagged as the parent (the one ``start_study`` reuses).

        Returns:
            True if the experiment has a parent run.
        """
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return False
        self.experiment_id = experiment.experiment_id
        if parent_run_id:
            try:
                self.parent_run_id = self.client.get_run(parent_run_id).info.run_id
                return True
            except Exception:  # deleted or from another store: fall back to the search
                logger.debug("parent run %s named by the study is gone", parent_run_id)
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{keys.TAG_ROLE}` = 'parent'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        self.parent_run_id = runs[0].info.run_id if runs else ""
        return bool(runs)

    def attach(self, spec: StudySpec, study: Any = None) -> bool:
        """Read-only use: find the study's parent run (see ``find_parent``); no writes."""
        recorded = study.user_attrs.get(keys.PARENT_RUN) if study is not None else None
        try:
            return self.find_parent(spec.name, recorded)
        except Exception as exc:  # MLflow raises many types; say where it failed, once
            raise TrackingError(f"MLflow at {self.tracking_uri}: {exc}") from exc

    def start_study(self, spec: StudySpec, study_text: str) -> str:
        """Find or create the experiment and the study's parent run; returns its id.

        Raises:
            TrackingError: MLflow failed (one line naming the server): the study cannot
                start without its parent run.
        """
        try:
            return self._start_study(spec, study_text)
        except Exception as exc:  # MLflow raises many types; say where it failed, once
            raise TrackingError(f"MLflow at {self.tracking_uri}: {first_line(exc)}") from exc

    def _start_study(self, spec: StudySpec, study_text: str) -> str:
        found = self.find_parent(spec.name)
        if not self.experiment_id:
            self.experiment_id = self.client.create_experiment(
                spec.name,
                artifact_location=self._artifact_location,
                tags={keys.TAG_EXPERIMENT_KIND: keys.EXPERIMENT_KIND_TRAINING},
            )
        else:  # an experiment made before the kind was set opens on the GenAI page
            self.client.set_experiment_tag(
                self.experiment_id, keys.TAG_EXPERIMENT_KIND, keys.EXPERIMENT_KIND_TRAINING
            )
        if found:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self._trial_runs = self.trial_runs()
            return self.parent_run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=spec.name,
            tags={
                keys.TAG_STUDY: spec.name,
                keys.TAG_ROLE: "parent",
                "mlflow.note.content": _note(spec),
            },
        )
        self.parent_run_id = run.info.run_id
        params = [Param(k, _short(v)) for k, v in _flatten(spec.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.parent_run_id, params=params[start : start + 100])
        # The study file as written, its secrets masked (every MLflow reader sees it).
        self.client.log_text(self.parent_run_id, scrub(study_text), "study.yaml")
        return self.parent_run_id

    def end_study(self, status: str = "FINISHED") -> None:
        record = {"op": "terminate", "run": self.parent_run_id, "status": status}
        self.write(record, f"the study's end ({status})")

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        now = _now_ms()
        rows = [(k, float(v), now, 0) for k, v in metrics.items()]
        self.write(batch(self.parent_run_id, metrics=rows), "the study's metrics")

    def set_study_tags(self, tags: Mapping[str, str]) -> None:
        record = batch(self.parent_run_id, tags={k: _short(v) for k, v in tags.items()})
        self.write(record, "the study's tags")

    def close_stale_trial_runs(self) -> int:
        """End child runs left RUNNING by a driver that died; returns how many.

        Only one driver runs a study at a time, so outside a run every RUNNING child is stale.
        """
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{keys.TAG_PARENT}` = '{self.parent_run_id}' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=10000,
        )
        tags = {keys.TAG_STATE: "INTERRUPTED", keys.TAG_REASON: "the driver stopped mid-trial"}
        for run in stale:
            self.write(batch(run.info.run_id, tags=tags), "a stale trial run's tags")
            record = {"op": "terminate", "run": run.info.run_id, "status": "KILLED"}
            self.write(record, "a stale trial run's end")
        return len(stale)

    # ----------------------------------------------------------------- trials

    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The child run of trial ``number``: created once, reused if Ray retries the trial.

        Returns the run id, or a placeholder that later writes resolve once MLflow answers.
        """
        if number in self._trial_runs:
            run_id = self._trial_runs[number]
            self.write(batch(run_id, tags={keys.TAG_STATE: "RUNNING"}), f"trial {number} restart")
            self.write({"op": "set_status", "run": run_id, "status": "RUNNING"},
                        f"trial {number} restart")  # fmt: skip
            return run_id
        self.create_trial_run(
            number, params, {keys.TAG_STATE: "RUNNING", **tags}, what=f"trial {number} start"
        )
        return self._trial_runs[number]  # the run's id when MLflow made it at once

    def create_trial_run(
        self, number: int, params: Mapping[str, Any], tags: Mapping[str, str], *, what: str
    ) -> str:
        """Write the creation of trial ``number``'s child run, now the trial's run; returns
        its placeholder id (see ``create_child_run``)."""
        run_tags = {keys.TAG_TRIAL: str(number), **tags}
        return self.create_child_run(
            f"trial-{number:04d}", params, run_tags, what=what, number=number
        )

    def create_child_run(
        self, name: str, params: Mapping[str, Any], tags: Mapping[str, str], *, what: str,
        number: int = -1,
    ) -> str:  # fmt: skip
        """Write the creation of a child run of the parent run (a trial's, or with ``number``
        -1 a reseed's or a refit's); returns its placeholder id, which later writes resolve
        once MLflow has made it."""
        # A placeholder until MLflow creates the run (now, or after an outage, in any process).
        placeholder = f"pending-{name}-{uuid.uuid4().hex[:12]}"
        if number >= 0:
            self._trial_runs[number] = placeholder  # before the write, which may resolve it
        record = {
            "op": "create_trial_run", "ref": placeholder, "number": number, "name": name,
            "tags": {keys.TAG_PARENT: self.parent_run_id, **tags},
            "params": {k: _short(v) for k, v in params.items()},
        }  # fmt: skip
        self.write(record, what)
        return placeholder

    def set_trial_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.write(batch(run_id, tags={k: _short(v) for k, v in tags.items()}), "tags")

    def log_epoch(
        self, run_id: str, metrics: Mapping[str, float], step: int,
        tags: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Log one epoch's finite numeric metrics at ``step`` (and ``tags``, in the same
        request)."""
        now = _now_ms()
        rows = [
            (k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        tags = {k: _short(v) for k, v in (tags or {}).items()}
        self.write(batch(run_id, metrics=rows, tags=tags), f"epoch {step} metrics")

    def log_files(self, run_id: str, folder: Path, artifact_path: str) -> str:
        """Upload ``folder`` under ``artifact_path``; how it went (see ``write``)."""
        record = {"op": "log_artifacts", "run": run_id, "folder": str(folder),
                  "artifact_path": artifact_path}  # fmt: skip
        return self.write(record, f"{artifact_path} files")

    def log_model(self, run_id: str, state_file: Path, info: Mapping[str, Any]) -> None:
        """Store the best epoch's weights and what rebuilds the network, under ``model/``
        (now, or journaled while MLflow is away).

        Raises:
            TrackingError: MLflow refused the files (a read-only or full artifact store).
        """
        with tempfile.TemporaryDirectory(prefix="searchsvc-model-") as folder:
            target = Path(folder)
            shutil.copyfile(state_file, target / "state_dict.pt")
            (target / "params.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            if self.log_files(run_id, target, MODEL_DIR) == "refused":  # deferred: a copy kept
                raise TrackingError("MLflow refused the model files (see the log)")

    def end_trial(
        self, run_id: str, state: TrialState, reason: str, summary: Mapping[str, Any]
    ) -> None:
        """End trial run ``run_id``: its state and reason as tags, its summary as
        ``searchsvc.<key>`` tags, and the MLflow status that matches the Optuna state."""
        name = state.name
        # The tag speaks MLflow's word for a failure (FAILED), Optuna's for the others.
        tags = {keys.TAG_STATE: _STATE_TAG.get(name, name), keys.TAG_REASON: reason}
        tags.update({keys.trial_tag(k): _short(v) for k, v in summary.items()})
        self.write(batch(run_id, tags=tags), f"{name} of a trial")
        status = _MLFLOW_STATUS.get(name, "FAILED")
        self.write({"op": "terminate", "run": run_id, "status": status}, f"{name} of a trial")

    def trial_run_records(self) -> dict[int, Run]:
        """Trial number -> child run, for every trial of this study in MLflow (the newest run
        of a number wins)."""
        return self.newest_trial_runs(50000)

    def newest_trial_runs(self, limit: int) -> dict[int, Run]:
        """Trial number -> child run, from the ``limit`` newest trial runs (the newest run of
        a number wins): a bounded read for checking the trials that finished last."""
        runs = self.client.search_runs(
            [self.experiment_id],
            # Trial runs only: reseed and refit runs (no trial number) must not fill the window.
            filter_string=(
                f"tags.`{keys.TAG_PARENT}` = '{self.parent_run_id}' "
                f"and tags.`{keys.TAG_TRIAL}` != ''"  # has the tag (runs without it never match)
            ),
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
        newest: dict[int, Run] = {}
        for run in runs:
            if keys.TAG_TRIAL in run.data.tags:
                newest.setdefault(int(run.data.tags[keys.TAG_TRIAL]), run)
        return newest

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> child run id (see ``trial_run_records``)."""
        return {number: run.info.run_id for number, run in self.trial_run_records().items()}


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
    """A param or tag value as MLflow stores it: secrets masked, at most 6,000 characters."""
    text = scrub(value if isinstance(value, str) else json.dumps(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def _note(spec: StudySpec) -> str:
    objective = ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives)
    return (
        f"{spec.description or spec.name}\n\ntrainer {spec.trainer}, dataset {spec.dataset.name}, "
        f"objective {objective}, sampler {spec.sampler.name}, scheduler {spec.scheduler.name}"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
