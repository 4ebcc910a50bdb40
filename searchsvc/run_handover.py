"""Which MLflow run a trial writes to when it replaces one a dead driver left unfinished.

A trial that continues an interrupted one from its checkpoint continues that trial's run (one
run per configuration, each epoch once); one that starts again from epoch 1 gets a run of its
own, and the run it replaces says so (``searchsvc.superseded_by``): MLflow cannot delete logged
values, so a restart's epochs must not land in the old history. A part of
:class:`searchsvc.tracking.StudyTracker`, kept apart because it is its own concern.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunTag

from searchsvc import keys

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["RunHandover"]

logger = logging.getLogger(__name__)


class RunHandover:
    """The tracker's handing over of interrupted trials' runs (mixed into StudyTracker)."""

    client: MlflowClient
    _trial_runs: dict[int, str]
    _logged_through: dict[int, int]

    def write(self, record: dict[str, Any], what: str) -> str: ...  # StudyTracker's
    def trial_runs(self) -> dict[int, str]: ...  # StudyTracker's

    def start_trial(  # StudyTracker's
        self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str: ...

    def adopt_interrupted_runs(self, resumed: Mapping[int, int], *, metric: str) -> int:
        """Hand each interrupted trial's run to the trial that resumes it; returns how many.

        ``resumed`` maps an interrupted trial number to its successor's. The run is retagged
        with the new number, and ``start_trial`` continues it: one MLflow run per configuration,
        its epochs in one history. A run already handed on (a driver that died twice before
        the successor started) is found under the successor's number. The last epoch of
        ``metric`` in the run is remembered (``logged_through``): the dead driver may have
        logged an epoch after the checkpoint the successor continues from, and the successor
        must not log it a second time.
        """
        if not resumed:
            return 0
        runs = self.trial_runs()
        adopted = 0
        for old, new in resumed.items():
            run_id = runs.get(new) or runs.get(old)
            if run_id is None:
                continue
            tags = [RunTag(keys.TAG_TRIAL, str(new)), RunTag(keys.TAG_RESUMED_FROM, str(old))]
            self.client.log_batch(run_id, tags=tags)
            self._trial_runs[new] = run_id
            history = self.client.get_metric_history(run_id, metric)
            self._logged_through[new] = max((m.step for m in history), default=0)
            adopted += 1
        logger.info("continuing %d interrupted trial run(s) in MLflow", adopted)
        return adopted

    def logged_through(self, number: int) -> int:
        """The last epoch already in the run trial ``number`` continues (0 for a new run)."""
        return self._logged_through.get(number, 0)

    def restart_trial(
        self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """A new child run for trial ``number``, which was to continue an interrupted trial's
        run but started again from epoch 1.

        MLflow cannot delete logged metric values, so the restart's epochs get a run of their
        own; the adopted run goes back to the interrupted trial (its ``searchsvc.trial_number``
        is restored from ``searchsvc.resumed_from_trial``), ends KILLED and is tagged
        ``searchsvc.superseded_by`` the new run.
        """
        old = self._trial_runs.pop(number, None)
        self._logged_through.pop(number, None)
        new = self.start_trial(number, params, tags)
        if old is None:
            return new

        self.write({"op": "hand_back", "old": old, "new": new}, f"trial {number} restart")
        return new

    def supersede(self, previous: int, run_id: str) -> None:
        """Tag the run of interrupted trial ``previous`` as superseded by ``run_id``, the run of
        the trial asked for again in its place that did not continue it (no checkpoint)."""
        old = self._trial_runs.get(previous)
        if old is None:
            return

        # Run ids are resolved when the write is made: either may still be a placeholder.
        self.write({"op": "supersede", "old": old, "new": run_id}, f"trial {previous} superseded")
