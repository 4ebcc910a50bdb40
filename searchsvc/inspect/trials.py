"""The trials table (``searchsvc trials``): one row per trial, as a pandas DataFrame.

Built from Optuna's ``study.trials_dataframe()`` (the storage is the source of truth for
states, values and params) and one MLflow ``search_runs`` call for each trial's run id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from searchsvc import keys
from searchsvc.errors import StudySpecError

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from searchsvc.inspect.target import StudyTarget

__all__ = ["STATES", "trials_table", "parse_states", "table_records"]

logger = logging.getLogger(__name__)

STATES = ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "RUNNING", "WAITING")
"""Optuna's trial states, with INTERRUPTED for a FAIL that a stopped driver left (run again)."""

# Trial user attributes shown as columns, under these names.
_ATTR_COLUMNS = {keys.EPOCHS: "epochs", keys.BEST_EPOCH: "best_epoch", keys.DIAGNOSIS: "diagnosis"}


def parse_states(given: Iterable[str]) -> tuple[str, ...]:
    """``["complete", "pruned,fail"]`` -> ``("COMPLETE", "PRUNED", "FAIL")``.

    Raises:
        StudySpecError: a name that is not a state (``--state``).
    """
    states = []
    for item in given:
        for word in filter(None, (w.strip() for w in item.split(","))):
            if word.upper() not in STATES:
                raise StudySpecError(
                    f"--state: unknown state {word!r}; expected one of: "
                    + ", ".join(s.lower() for s in STATES)
                )
            states.append(word.upper())
    return tuple(states)


def trials_table(target: StudyTarget, states: Iterable[str] = ()) -> pd.DataFrame:
    """One row per trial of ``target``, by trial number.

    Columns: ``number``, ``state``, one per objective named by its metric (``val_loss``),
    ``params_<name>`` per param, ``epochs``, ``best_epoch``, ``diagnosis``, ``duration_s``,
    ``pareto`` (several objectives only: on the Pareto front), ``mlflow_run_id`` (None
    where MLflow has no run for the trial, or no store is known).

    Args:
        states: keep only these states (see :data:`STATES`); all when empty.

    Raises:
        StudyNotRunError: the study has not run.
    """
    study = target.open()
    frame = _optuna_frame(study)
    if len(study.directions) > 1:
        # Several objectives: whether each trial is on the Pareto front (Optuna's best_trials).
        front = {t.number for t in study.best_trials}
        frame["pareto"] = [int(n) in front for n in frame["number"]]
    runs = _run_ids(target, study)
    frame["mlflow_run_id"] = [runs.get(int(n)) for n in frame["number"]]
    wanted = tuple(states)
    if wanted:
        frame = frame[frame["state"].isin(wanted)]
    return frame.reset_index(drop=True)


def _optuna_frame(study: optuna.Study) -> pd.DataFrame:
    import pandas as pd

    attrs = ("number", "value", "state", "duration", "params", "user_attrs")
    raw = study.trials_dataframe(attrs=attrs, multi_index=False)
    metrics = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    frame = pd.DataFrame({"number": raw.get("number", pd.Series(dtype="int64"))})
    interrupted = _column(raw, f"user_attrs_{keys.INTERRUPTED}").fillna(False).astype(bool)
    frame["state"] = _column(raw, "state").where(~interrupted, "INTERRUPTED")
    for index, metric in enumerate(metrics):
        frame[metric] = _column(raw, _value_column(raw, metric, index, len(metrics)))
    integers = _integer_params(study)
    for column in raw.columns:
        if column.startswith("params_"):
            # An int param absent from some trials (conditional) stays an int, not a float.
            integer = column.removeprefix("params_") in integers
            frame[column] = raw[column].astype("Int64") if integer else raw[column]
    for attr, name in _ATTR_COLUMNS.items():
        column = _column(raw, f"user_attrs_{attr}")
        frame[name] = column.astype("Int64") if name != "diagnosis" else column
    frame["duration_s"] = _column(raw, "duration").dt.total_seconds()
    warm = f"user_attrs_{keys.WARM_FROM}"
    if warm in raw.columns:  # only in a warm-started study: the source trial of each copy
        frame["warm_start_from"] = raw[warm]
    return frame


def _integer_params(study: optuna.Study) -> set[str]:
    from optuna.distributions import IntDistribution

    return {
        name
        for trial in study.get_trials(deepcopy=False)
        for name, dist in trial.distributions.items()
        if isinstance(dist, IntDistribution)
    }


def _value_column(raw: pd.DataFrame, metric: str, index: int, count: int) -> str:
    """Optuna names the value column after the metric when names are set."""
    for name in (f"value_{metric}", f"values_{metric}", f"values_{index}"):
        if name in raw.columns:
            return name
    return "value" if count == 1 else f"values_{index}"


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    """A column of Optuna's frame, or an empty one (no trial has that attribute yet)."""
    import pandas as pd

    if name in raw.columns:
        return raw[name]
    dtype = "timedelta64[us]" if name == "duration" else "object"
    return pd.Series([None] * len(raw), index=raw.index, dtype=dtype)


def _run_ids(target: StudyTarget, study: optuna.Study) -> dict[int, str]:
    """Trial number -> MLflow run id, from one ``search_runs`` over the study's experiment.

    Reads only: an absent store or experiment gives no ids (and creates nothing).
    """
    if not target.tracking_store_exists():
        return {}
    from mlflow.tracking import MlflowClient

    assert target.tracking_uri is not None
    client = MlflowClient(tracking_uri=target.tracking_uri)
    experiment = client.get_experiment_by_name(target.name)
    if experiment is None:
        return {}
    parent = study.user_attrs.get(keys.PARENT_RUN)
    where = f"tags.`{keys.TAG_PARENT}` = '{parent}'" if parent else ""
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=where, max_results=50000,
        order_by=["attributes.start_time ASC"],
    )  # fmt: skip
    # The latest run of a trial number wins (a resumed study may hold an older one).
    tag = keys.TAG_TRIAL
    return {int(r.data.tags[tag]): r.info.run_id for r in runs if tag in r.data.tags}


def table_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-ready records (missing -> None, numbers exact), as ``--json`` prints
    them."""
    import pandas as pd

    return [
        {
            k: None if _missing(v, pd) else getattr(v, "item", lambda v=v: v)()
            for k, v in row.items()
        }
        for row in frame.astype(object).to_dict(orient="records")
    ]


def _missing(value: Any, pd: Any) -> bool:
    return not isinstance(value, list | dict | tuple) and bool(pd.isna(value))
