"""The libraries' settings for the duration of one run: quiet, and low per-trial overhead."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

__all__ = ["RAY_ENV", "quiet_libraries"]

# Ray and Tune settings that keep the driver quiet and the per-trial overhead low. They must be
# in the environment before Ray is imported.
RAY_ENV = {
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # TUNE_MAX_PENDING_TRIALS_PG is left to Tune: "auto" lets max_concurrent_trials trials
    # wait for a worker at once. Pinned to 1, a finished trial's slot stayed empty until the
    # next trial had its worker: 5.5 of 8 sleeping trials between their start and end in
    # Optuna instead of 7.8 (6.9 inside an epoch). Known cost: with max_concurrent_trials above
    # what the cluster can run, trials asked and still waiting when the time budget runs out
    # start afterwards and run one epoch each (one such trial before).
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Fail fast on an unreachable tracking server: the tracker defers and retries by itself,
    # while MLflow's own retries would stall the driver for minutes per call.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep the libraries' chatter off the user's terminal (our own progress line says it) and
    the per-trial overhead low, for the duration of one run only: the variables set here and
    the logger levels are put back afterwards, so a Python caller's process is left as it was.
    What Ray's own driver sets for the process (``RAY_AUTH_MODE``, ``PYTHONBREAKPOINT``, ...)
    stays: Ray's in-process state relies on it for the next ``ray.init`` (taking it away made
    the next run's workers die)."""
    import warnings

    import optuna

    settings = {**RAY_ENV, "MLFLOW_LOGGING_LEVEL": "WARNING"}
    saved_env = {key: os.environ.get(key) for key in settings}
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    levels = {
        "mlflow": logging.WARNING,
        "alembic": logging.WARNING,
        "ray": logging.ERROR,
        "ray.tune": logging.ERROR,
        # MLflow warns that a Python-object pyfunc model is pickled: known and documented.
        "mlflow.pyfunc": logging.ERROR,
    }
    saved_levels = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
