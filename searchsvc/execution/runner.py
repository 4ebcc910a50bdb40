"""Run a study: data once in the driver, Optuna-guided trials on Ray, everything in MLflow.

This is the only module that starts Ray. The flow is one way:
study spec -> sampler + scheduler -> trials (trainable -> trainer) -> metrics -> tracking.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from searchsvc import keys
from searchsvc.ensemble.summary import EnsembleSummary
from searchsvc.errors import first_line
from searchsvc.execution.quiet import quiet_libraries
from searchsvc.execution.ray_session import start_ray
from searchsvc.search.budget import TimeBudget
from searchsvc.search.storage import TrialSummary
from searchsvc.signals import reassert_stop_signals, signal_handlers_kept
from searchsvc.study.loader import Study
from searchsvc.study.locations import StudyPaths
from searchsvc.study_run import RunOutcome, StudyRun

if TYPE_CHECKING:
    from searchsvc.ensemble.reseeds import ReseedOutcome

__all__ = ["StudyResult", "run_study"]

logger = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """What a run of ``searchsvc run`` ended with (read back from Optuna storage).

    ``interrupted``: Ctrl-C or SIGTERM stopped it during ``stopped_during`` (a stage name such
    as ``"searching"``), by ``signal``; the parent run then ended KILLED (``status``).
    ``out_of_time``: the time budget ran out before ``budget`` trials finished.
    """

    name: str
    paths: StudyPaths
    parent_run_id: str
    complete: int
    pruned: int
    failed: int
    budget: int
    interrupted: bool
    top: list[TrialSummary] = field(default_factory=list)
    ensemble: EnsembleSummary | None = None
    report: Path | None = None
    elapsed_s: float = 0.0
    stopped_during: str = ""
    out_of_time: bool = False
    signal: str = ""
    status: str = ""
    pending: int = 0
    experiment_id: str = ""
    metrics: list[str] = field(default_factory=list)  # the objectives' metrics, in order
    reseeds: ReseedOutcome | None = None  # the reseed stage's record (ensemble: reseed)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``searchsvc run --json`` prints exactly this): every field and
        ``finished``, the ensemble in its ``summary.json`` form, paths as strings."""
        data = asdict(self)
        data["paths"] = {k: None if v is None else str(v) for k, v in data["paths"].items()}
        data["top"] = [{**row, "values": list(row["values"])} for row in data["top"]]
        data["ensemble"] = self.ensemble.to_json() if self.ensemble is not None else None
        data["report"] = None if self.report is None else str(self.report)
        data["finished"] = self.finished
        return data


def run_study(
    study: Study | StudyRun,
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
    Ctrl-C or SIGTERM at any stage ends the run cleanly (``result.interrupted``): the parent
    run KILLED, the claim released. Any other error ends the parent run FAILED and is raised.

    Raises:
        StudySpecError: an option is malformed (before anything is created).
        SearchsvcError: a stage failed (``StudyFailed`` names it for unexpected errors).
    """
    run = study if isinstance(study, StudyRun) else StudyRun.prepare(
        study, n_trials=n_trials, tracking_uri=tracking_uri, storage=storage, workdir=workdir
    )  # fmt: skip
    run.preflight(address)  # before anything is created: the data, the Ray address
    console = console or Console(stderr=True)
    started = time.monotonic()
    ensemble: EnsembleSummary | None = None
    report: Path | None = None
    out_of_time = False
    top: list[TrialSummary] = []
    reseeds: ReseedOutcome | None = None
    budget = TimeBudget(run.spec.budget.time_budget_s)  # the search's and the reseeds'
    with quiet_libraries(), run.lifecycle() as outcome:
        run.enter("loading the data")
        run.load_data()
        run.enter("opening the study")
        _open(run, console)
        run.enter("searching")
        out_of_time = _search(run, address, console, budget)
        run.enter("summarising the search")
        top = _summarise(run)
        ensembling = build_ensemble and run.spec.ensemble.enabled and top
        if ensembling and run.spec.ensemble.reseed:
            run.enter("reseeding the best configurations")
            reseeds = _reseed(run, budget, console)
        if ensembling:
            run.enter("building the ensemble")
            ensemble = _ensemble(run, console)
        if build_report:
            run.enter("writing the report")
            report = _report(run)
    result = _result(run, outcome, top)
    result.ensemble, result.report, result.out_of_time = ensemble, report, out_of_time
    result.reseeds = reseeds
    result.elapsed_s = time.monotonic() - started
    return result


def _open(run: StudyRun, console: Console) -> None:
    """The Optuna study (claimed) and the MLflow parent run; say what a resume picks up."""
    from searchsvc.reconcile import reconcile
    from searchsvc.search.storage import count_trials

    recovered = run.open_search()
    stale = run.open_tracking()
    found = reconcile(run.study, run.tracker, metric=run.spec.primary.metric)
    if found.problems:
        console.print(f"MLflow reconciled with Optuna: {found.problems} trial(s) tagged "
                      f"{keys.TAG_RECONCILE} (the log says which)")  # fmt: skip
    if recovered or stale:
        counts = count_trials(run.study)
        console.print(
            f"resuming: {len(recovered)} interrupted trial(s) will run again; "
            f"{counts.finished} finished trial(s) kept"
        )


def _search(run: StudyRun, address: str | None, console: Console, budget: TimeBudget) -> bool:
    """Run the trials still due on Ray; True when the time budget ran out before the trial
    budget was reached. A Ctrl-C that Tune caught is raised again here."""
    import ray

    from searchsvc.search.storage import count_trials, recover_interrupted

    finished = count_trials(run.study).finished
    to_run = max(run.budget - finished, 0)
    if not to_run:
        return False
    tuner = _tuner(run, to_run, finished, console, budget)
    with signal_handlers_kept():
        start_ray(run, address or run.settings.ray_address)
        reassert_stop_signals()  # ray.init replaced the SIGTERM handler with one that aborts
        budget.start()
        stopped = False
        try:
            tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C, which Tune lets through
            stopped = True
        finally:
            # Trials Ray did not finish (Ctrl-C) become interrupted, not RUNNING.
            leftover = recover_interrupted(run.study)
            if ray.is_initialized():
                ray.shutdown()
    # Tune catches Ctrl-C itself and returns; unfinished trials mean the user stopped the run
    # (the time budget stops trials at an epoch's end: they are finished, PRUNED).
    if stopped or leftover:
        raise KeyboardInterrupt
    run.enter("writing the MLflow backlog")
    tracker, wait_s = run.tracker, run.settings.mlflow_wait_s
    if tracker.pending:
        console.print(f"MLflow: {tracker.pending} deferred update(s) to write; waiting up to "
                      f"{wait_s:.0f} s (SEARCHSVC_MLFLOW_WAIT_S)")  # fmt: skip
    if tracker.flush(wait_s=wait_s):
        tracker.close_stale_trial_runs()
    else:  # the study still ends: the ensemble and report from what is stored
        console.print(
            f"[yellow]MLflow at {tracker.tracking_uri} did not answer within {wait_s:.0f} s"
            f"[/yellow]: {tracker.pending} update(s) kept in {tracker.journal_path}; "
            f"`searchsvc sync {run.where}` writes them when it answers (so does the next run)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if tracker.lost_writes:
        console.print(f"[yellow]MLflow refused {tracker.lost_writes} write(s)[/yellow]; "
                      "the log above says which")  # fmt: skip
    return budget.expired() and count_trials(run.study).finished < run.budget


def _tuner(
    run: StudyRun, to_run: int, done_before: int, console: Console, budget: TimeBudget
) -> Any:
    from ray import tune

    from searchsvc.execution.callbacks import ProgressCallback, TrackingCallback
    from searchsvc.execution.schedulers import BudgetStopper, build_scheduler, stopped_trial_ids
    from searchsvc.execution.trainable import make_trainable
    from searchsvc.search.searcher import OptunaSearcher

    spec, data = run.spec, run.data
    scheduler = build_scheduler(spec)
    searcher = OptunaSearcher(spec, run.study, stopped_trial_ids(scheduler), budget)
    tracking = TrackingCallback(
        run.tracker, searcher, trainer_ref=spec.trainer, has_weights=run.trainer.has_weights,
        n_features=data.n_features, n_classes=data.n_classes,
    )  # fmt: skip
    progress = ProgressCallback(
        spec, searcher, done_before=done_before, to_run=to_run, console=console,
        best_before=_best(run),
    )  # fmt: skip
    trainable = tune.with_resources(
        tune.with_parameters(
            make_trainable(
                spec.trainer,
                search_path=run.search_path,
                max_epochs=spec.budget.max_epochs,
                cpus=spec.resources.cpus,
            ),
            data=data.without_test(),
        ),
        {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus},
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=to_run,
            max_concurrent_trials=spec.budget.max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(run.paths.ray_storage),
            verbose=0,
            callbacks=[tracking, progress],
            stop=BudgetStopper(budget),
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
            # Every checkpoint kept by Tune; the tracking callback deletes each one a newer
            # one replaces (num_to_keep would force an experiment snapshot per checkpoint).
            checkpoint_config=tune.CheckpointConfig(),
        ),
    )


def _reseed(run: StudyRun, budget: TimeBudget, console: Console) -> ReseedOutcome | None:
    """The reseeds, within what is left of the time budget (counted from now when the search
    had nothing to run). The search succeeded: whatever stops the reseeds is said in one line
    and the ensemble is built from the trials (MLflow away: it is owed, as it would be)."""
    from searchsvc.deferred import unreachable
    from searchsvc.ensemble.reseeds import reseed_best

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    if run.tracker.pending:
        say(f"no reseeds: {run.tracker.pending} MLflow update(s) still journaled")
        return None
    if not budget.started:
        budget.start()
    try:
        outcome = reseed_best(run, budget.wall_deadline())
    except Exception as exc:
        why = "tracking server unreachable" if unreachable(exc) else type(exc).__name__
        say(f"no reseeds: {why}: {first_line(exc)}")
        logger.debug("the reseeds failed", exc_info=True)  # the traceback, with -v
        return None
    say(outcome.line())
    return outcome


def _summarise(run: StudyRun) -> list[TrialSummary]:
    """The top trials; the study's counts and best value logged to its parent run."""
    from searchsvc.search.storage import count_trials

    counts = count_trials(run.study)
    # Several objectives: the whole Pareto front (no one trial is best).
    top = _top_rows(run, 5 if len(run.spec.objectives) == 1 else None)
    run.tracker.log_study_metrics(
        {"trials_complete": counts.complete, "trials_pruned": counts.pruned,
         "trials_failed": counts.failed},
    )  # fmt: skip
    if top:
        best = top[0]
        run.tracker.set_study_tags({"best_trial": str(best.number), "best_value": str(best.value)})
        run.tracker.log_study_metrics({f"best_{run.spec.primary.metric}": best.value})
    return top


def _ensemble(run: StudyRun, console: Console) -> EnsembleSummary | None:
    from searchsvc.ensemble.owed import build_or_owe

    # The search itself succeeded: whatever goes wrong here is said, and the study still ends
    # (report written, parent run ended, claim released).
    summary, why_not = build_or_owe(run)
    if why_not:
        console.print(why_not, highlight=False, markup=False, soft_wrap=True)
    return summary


def _report(run: StudyRun) -> Path | None:
    from searchsvc.report.build import write_report

    try:
        return write_report(run)
    except Exception as exc:  # the report is a view of stored results: never fail the study
        logger.error("could not write the study report: %s", first_line(exc))
        logger.debug("the report failed", exc_info=True)  # the traceback, with -v
        return None


def _result(run: StudyRun, outcome: RunOutcome, top: list[TrialSummary]) -> StudyResult:
    from searchsvc.search.storage import count_trials

    counts = count_trials(run.study) if run.study is not None else None
    return StudyResult(
        name=run.spec.name,
        paths=run.paths,
        parent_run_id=run.tracker.parent_run_id if run.tracker is not None else "",
        experiment_id=run.tracker.experiment_id if run.tracker is not None else "",
        complete=counts.complete if counts is not None else 0,
        pruned=counts.pruned if counts is not None else 0,
        failed=counts.failed if counts is not None else 0,
        budget=run.budget,
        interrupted=outcome.interrupted,
        top=top,
        stopped_during=outcome.stage if outcome.interrupted else "",
        signal=outcome.signal if outcome.interrupted else "",
        status=outcome.status,
        pending=outcome.pending,
        metrics=[o.metric for o in run.spec.objectives],
    )


def _best(run: StudyRun) -> tuple[int, float] | None:
    from searchsvc.search.storage import top_trials

    top = top_trials(run.study, run.spec, 1)
    return (top[0].number, top[0].values[0]) if top else None


def _top_rows(run: StudyRun, n: int | None) -> list[TrialSummary]:
    from searchsvc.search.storage import top_trials

    return [TrialSummary.of(t) for t in top_trials(run.study, run.spec, n)]
