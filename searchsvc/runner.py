"""Run a study: data once in the driver, Optuna-guided trials on Ray, everything in MLflow.

This is the only module that starts Ray. The flow is one way:
study spec -> sampler + scheduler -> trials (trainable -> trainer) -> metrics -> tracking.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from searchsvc.errors import EnsembleError
from searchsvc.loader import Study
from searchsvc.paths import StudyPaths, resolve_paths
from searchsvc.spec import StudySpec

__all__ = ["StudyResult", "run_study", "load_study_data"]

logger = logging.getLogger(__name__)

# Ray and Tune settings that keep the driver quiet and the per-trial overhead low. They must be
# in the environment before Ray is imported.
_RAY_ENV = {
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Fail fast on an unreachable tracking server: the tracker defers and retries by itself,
    # while MLflow's own retries would stall the driver for minutes per call.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass
class StudyResult:
    """What a run of ``searchsvc run`` ended with (read back from Optuna storage)."""

    name: str
    paths: StudyPaths
    parent_run_id: str
    complete: int
    pruned: int
    failed: int
    budget: int
    interrupted: bool
    top: list[dict[str, Any]] = field(default_factory=list)
    ensemble: dict[str, Any] | None = None
    report: Path | None = None
    elapsed_s: float = 0.0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def load_study_data(spec: StudySpec) -> Any:
    """The study's data set, loaded once (in the driver)."""
    from trainers.datasets import load_dataset

    return load_dataset(
        spec.dataset.name,
        data_dir=spec.dataset.data_dir,
        path=spec.dataset.path,
        val_size=spec.dataset.val_size,
        train_subset=spec.dataset.train_subset,
        seed=spec.seed,
    )


def run_study(
    study: Study,
    *,
    n_trials: int | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    address: str | None = None,
    workdir: str | Path | None = None,
    console: Console | None = None,
    build_ensemble: bool = True,
    build_report: bool = True,
) -> StudyResult:
    """Run (or resume) ``study`` until its budget of finished trials is reached.

    Running the same study again continues it: finished trials are never rerun, trials left
    running by a stopped driver are asked for again, and MLflow gets one run per trial.
    """
    _quiet_libraries()
    import ray
    from ray import tune

    from searchsvc.callbacks import DriverHeartbeat, ProgressCallback, TrackingCallback
    from searchsvc.registry import resolve_trainer
    from searchsvc.samplers import build_sampler
    from searchsvc.schedulers import build_scheduler, stopped_trial_ids
    from searchsvc.searcher import OptunaSearcher
    from searchsvc.storage import (
        BUDGET_ATTR,
        claim_study,
        count_trials,
        open_study,
        recover_interrupted,
        release_study,
        resumed_trials,
    )
    from searchsvc.tracking import StudyTracker
    from searchsvc.trainable import make_trainable

    console = console or Console(stderr=True)
    spec = study.spec
    if n_trials is not None:
        spec = spec.model_copy(
            update={"budget": spec.budget.model_copy(update={"n_trials": n_trials})}
        )
    budget = spec.budget.n_trials
    if spec.sampler.name == "grid" and budget > spec.grid_size():
        logger.warning("grid has %d combinations; budget %d capped", spec.grid_size(), budget)
        budget = spec.grid_size()
    paths = resolve_paths(spec, tracking_uri=tracking_uri, storage=storage, workdir=workdir)
    paths.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    trainer = resolve_trainer(spec.trainer)
    data = load_study_data(spec)

    optuna_study = open_study(spec, paths.storage_url)
    # Before anything else: a second live driver would take the first one's trials as orphans.
    claim_study(optuna_study)
    recovered = recover_interrupted(optuna_study)
    counts = count_trials(optuna_study)
    # A resumed seeded sampler must not replay the start-up points of the first run.
    seed = spec.seed + len(optuna_study.get_trials(deepcopy=False))
    optuna_study.sampler = build_sampler(spec, seed=seed)

    tracker = StudyTracker(paths.tracking_uri, artifact_location=paths.artifact_location)
    parent_run_id = tracker.start_study(spec, study.text)
    stale = tracker.close_stale_trial_runs()
    tracker.adopt_interrupted_runs(resumed_trials(optuna_study))
    if recovered or stale:
        console.print(
            f"resuming: {len(recovered)} interrupted trial(s) will run again; "
            f"{counts.finished} finished trial(s) kept"
        )
    optuna_study.set_user_attr("mlflow_parent_run_id", parent_run_id)
    optuna_study.set_user_attr("mlflow_tracking_uri", paths.tracking_uri)
    # `searchsvc status` shows progress toward the budget of the last run (--n-trials included).
    optuna_study.set_user_attr(BUDGET_ATTR, budget)

    to_run = max(budget - counts.finished, 0)
    interrupted = False
    if to_run:
        scheduler = build_scheduler(spec)
        searcher = OptunaSearcher(spec, optuna_study, stopped_trial_ids(scheduler))
        tracking = TrackingCallback(
            tracker,
            searcher,
            trainer_ref=spec.trainer,
            n_features=data.n_features,
            n_classes=data.n_classes,
            seed=spec.seed,
        )
        best_before = _best(optuna_study, spec)
        progress = ProgressCallback(
            spec, searcher, done_before=counts.finished, to_run=to_run, console=console,
            best_before=best_before,
        )  # fmt: skip
        _init_ray(address)
        trainable = tune.with_resources(
            tune.with_parameters(
                make_trainable(
                    spec.trainer,
                    max_epochs=spec.budget.max_epochs,
                    seed=spec.seed,
                    cpus=spec.resources.cpus,
                ),
                data=data.without_test(),
            ),
            {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=to_run,
                max_concurrent_trials=spec.budget.max_concurrent_trials,
                time_budget_s=spec.budget.time_budget_s,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(paths.ray_storage),
                verbose=0,
                callbacks=[tracking, progress, DriverHeartbeat(optuna_study)],
                failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        fit_started = time.monotonic()
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Trials Ray did not finish (Ctrl-C, time budget) become interrupted, not RUNNING.
            leftover = recover_interrupted(optuna_study)
            # Tune catches Ctrl-C itself and returns; unfinished trials without an expired
            # time budget mean the user stopped the run.
            limit = spec.budget.time_budget_s
            out_of_time = limit is not None and time.monotonic() - fit_started >= limit
            interrupted = interrupted or (bool(leftover) and not out_of_time)
            if ray.is_initialized():
                ray.shutdown()
        if tracker.pending:
            console.print(f"MLflow: {tracker.pending} deferred update(s) still to write; waiting")
        tracker.flush(wait_s=float(os.environ.get("SEARCHSVC_MLFLOW_WAIT_S", "300")))
        tracker.close_stale_trial_runs()
        if tracker.lost_writes:
            console.print(
                f"[yellow]MLflow refused {tracker.lost_writes} write(s)[/yellow]; "
                "the log above says which"
            )

    counts = count_trials(optuna_study)
    result = StudyResult(
        name=spec.name,
        paths=paths,
        parent_run_id=parent_run_id,
        complete=counts.complete,
        pruned=counts.pruned,
        failed=counts.failed,
        budget=budget,
        interrupted=interrupted and counts.finished < budget,
        top=_top_rows(optuna_study, spec, 5),
    )
    tracker.log_study_metrics(
        {"trials_complete": counts.complete, "trials_pruned": counts.pruned,
         "trials_failed": counts.failed},
    )  # fmt: skip
    if result.top:
        best = result.top[0]
        tracker.set_study_tags(
            {"best_trial": str(best["number"]), "best_value": str(best["value"])}
        )
        tracker.log_study_metrics({f"best_{spec.primary.metric}": best["value"]})
    if build_ensemble and spec.ensemble.enabled and counts.complete and not result.interrupted:
        from searchsvc.study_ensemble import build_study_ensemble

        try:
            result.ensemble = build_study_ensemble(spec, paths, tracker, data, trainer)
        except EnsembleError as exc:  # the search itself succeeded; say why there is no ensemble
            logger.warning("no ensemble: %s", exc)
            console.print(f"no ensemble: {exc}")
    if build_report and counts.finished:
        from searchsvc.report import write_report

        try:
            result.report = write_report(spec, paths)
        except Exception:  # the report is a view of stored results: never fail the study for it
            logger.exception("could not write the study report")
    tracker.end_study("KILLED" if result.interrupted else "FINISHED")
    release_study(optuna_study)
    result.elapsed_s = time.monotonic() - started
    return result


def _quiet_libraries() -> None:
    """Keep the libraries' chatter off the user's terminal; our own progress line says it."""
    import warnings

    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name, level in (
        ("mlflow", logging.WARNING),
        ("alembic", logging.WARNING),
        ("ray", logging.ERROR),
        ("ray.tune", logging.ERROR),
        # MLflow warns that a Python-object pyfunc model is pickled: known and documented.
        ("mlflow.pyfunc", logging.ERROR),
    ):
        logging.getLogger(name).setLevel(level)


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        # Trainers named 'module:object' from the user's folder must import in the workers too.
        "runtime_env": {"env_vars": {"PYTHONPATH": _pythonpath()}},
    }
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a fresh cluster of this machine's cores, never a leftover one.
        ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)


def _pythonpath() -> str:
    parts = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))


def _best(optuna_study: Any, spec: StudySpec) -> tuple[int, float] | None:
    from searchsvc.storage import top_trials

    top = top_trials(optuna_study, spec, 1)
    return (top[0].number, top[0].values[0]) if top else None


def _top_rows(optuna_study: Any, spec: StudySpec, n: int) -> list[dict[str, Any]]:
    from searchsvc.storage import top_trials

    return [
        {
            "number": t.number,
            "value": t.values[0],
            "values": list(t.values),
            "params": dict(t.params),
            "epochs": t.user_attrs.get("epochs"),
            "best_epoch": t.user_attrs.get("best_epoch"),
        }
        for t in top_trials(optuna_study, spec, n)
    ]
