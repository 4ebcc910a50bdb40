"""What the study report reads, and how it names and formats it: the only place for both.

``StudyData`` fetches everything once (the Optuna trials, the study's MLflow parent run and
one child run per trial) and caches each trial's per-epoch metric histories; no other module
of the report asks Optuna or MLflow for trial data. Beside it: ``group_params``, which turns
``group_by`` into the params that define a comparison study's groups, the labels and value
formats every figure and table shares (metric axis labels with units, numbers, trial states,
parameter lists) and ``quiet_downloads`` for MLflow artifact downloads without progress bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from searchsvc import keys
from searchsvc.errors import StudySpecError
from searchsvc.study.spec import CategoricalParam, StudySpec
from searchsvc.study_run import StudyRun

__all__ = [
    "StudyData",
    "fmt",
    "group_params",
    "last_intermediate",
    "metric_label",
    "params_text",
    "primary_value",
    "quiet_downloads",
    "state_key",
]


@dataclass
class StudyData:
    """Everything the report reads, fetched once: Optuna trials and MLflow runs."""

    spec: StudySpec
    trials: list[FrozenTrial]
    study: optuna.Study | None
    client: MlflowClient | None  # None: no MLflow store for this study
    parent: Run | None
    runs: dict[int, Run]  # trial number -> child run
    _series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def load(cls, run: StudyRun) -> StudyData:
        study = run.study
        trials = list(study.get_trials(deepcopy=False)) if study is not None else []
        tracker = run.tracker if run.tracker is not None else run.attach_tracking()
        client = tracker.client if tracker is not None else None
        parent = None
        if tracker is not None and tracker.parent_run_id:
            parent = client.get_run(tracker.parent_run_id)
        runs = tracker.trial_run_records() if parent is not None else {}
        return cls(run.spec, trials, study, client, parent, runs)

    def with_state(self, *states: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in states]

    def series(self, number: int, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(epochs, values) of one metric of one trial, or None if MLflow has none."""
        run = self.runs.get(number)
        if run is None:
            return None
        cache_key = (run.info.run_id, key)
        if cache_key not in self._series:
            history = self.client.get_metric_history(run.info.run_id, key)
            # A resumed trial may log an epoch twice: the later value is the one that counts.
            by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
            steps = np.array(sorted(by_step), dtype=float)
            self._series[cache_key] = (steps, np.array([by_step[s] for s in sorted(by_step)]))
        steps, values = self._series[cache_key]
        return (steps, values) if len(steps) else None


def group_params(spec: StudySpec, group_by: str | None) -> list[str]:
    if group_by is None:
        if spec.sampler.name != "grid":
            return []
        return [
            name
            for name, param in spec.search_space.items()
            if isinstance(param, CategoricalParam) and len(param.choices) > 1
        ]
    names = [n.strip() for n in group_by.split(",") if n.strip()]
    unknown = [n for n in names if n not in spec.search_space]
    if unknown or not names:
        raise StudySpecError(
            f"group_by {group_by!r}: expected comma-separated params of the search space "
            f"({', '.join(spec.search_space)}), unknown: {', '.join(unknown) or '(none given)'}"
        )
    return names


# --------------------------------------------------------------------------- labels and values


def metric_label(metric: str) -> str:
    """An axis label with units for a metric name the trainers report."""
    split = {"train": "training", "val": "validation", "test": "test"}
    prefix, _, rest = metric.partition("_")
    where = split.get(prefix)
    if where and rest == "loss":
        return f"{where} loss (nats/sample)"
    if where and rest == "accuracy":
        return f"{where} accuracy (fraction)"
    if metric.endswith("_s"):
        return f"{metric} (s)"
    return f"{metric} (as reported)"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def state_key(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL and trial.user_attrs.get(keys.INTERRUPTED):
        return "INTERRUPTED"
    return trial.state.name


def last_intermediate(trial: FrozenTrial) -> tuple[int, float] | None:
    finite = [(s, v) for s, v in trial.intermediate_values.items() if math.isfinite(v)]
    return max(finite) if finite else None


def primary_value(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "(none)"


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per download: noise on the user's terminal, off here."""
    was = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get_raw()
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set("false")
    try:
        yield
    finally:
        if was is None:
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.unset()
        else:
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(was)
