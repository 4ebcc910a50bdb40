"""The ``searchsvc`` command line: thin wrappers over the library, and the only place that
prints or chooses exit codes (2: bad study file or usage, 1: any other searchsvc error)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from searchsvc import redaction
from searchsvc.completion import study_files
from searchsvc.errors import SearchsvcError, StudySpecError
from searchsvc.redaction import redact_url
from searchsvc.streams import stdout_to_stderr
from searchsvc.study.loader import Study, load_study

if TYPE_CHECKING:
    from searchsvc.study_run import StudyRun

app = typer.Typer(
    name="searchsvc",
    help="Hyperparameter search for deep networks: Optuna + Ray Tune + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

StudyArg = Annotated[
    Path,
    typer.Argument(help="The study file (YAML).", show_default=False, autocompletion=study_files),
]
TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: embedded).")
]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Optuna storage URL (default: embedded SQLite).")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the data set files are (before $SEARCHSVC_DATA_DIR and the cache).",
    ),
]
WorkdirOpt = Annotated[
    Path | None, typer.Option("--workdir", help="The study's folder (default: runs/<name>).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="Override a study-file field before validation (repeatable), e.g. "
        "--set budget.n_trials=3 --set search_space.lr=0.01.",
    ),
]


AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="A Ray cluster (host:port, ray://host:port, auto); checked first."
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")
]


def _print_json(document: Any) -> None:
    """The command's answer as one JSON document on stdout (and nothing else there)."""
    import json

    print(json.dumps(document, indent=2, default=str))


def _fail(exc: SearchsvcError) -> typer.Exit:
    code = 2 if isinstance(exc, StudySpecError) else 1
    for line in str(exc).splitlines():
        err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(path: Path, sets: list[str] | None = None) -> Study:
    """The validated study file with its ``--set`` overrides (a bad one: exit 2)."""
    from searchsvc.study.overrides import parse_overrides

    try:
        return load_study(path, overrides=parse_overrides(sets or []))
    except StudySpecError as exc:
        raise _fail(exc) from None


def _prepare(study: Path, sets: list[str] | None = None, **options: Any) -> StudyRun:
    """The command's StudyRun; a bad file, ``--set`` or option is an input error (exit 2),
    before anything is created."""
    from searchsvc.study_run import StudyRun

    try:
        return StudyRun.prepare(_load(study, sets), **options)
    except StudySpecError as exc:
        raise _fail(exc) from None


def _open_existing(run: StudyRun) -> None:
    """For the commands that read results: the study must have run (else exit 1)."""
    try:
        run.open_existing()
    except SearchsvcError as exc:
        raise _fail(exc) from None


# A URL with a password is never shown: the resume hint names it by the variable that can
# carry it instead.
_SECRET_VARIABLE = {"--storage": "SEARCHSVC_STORAGE", "--tracking-uri": "MLFLOW_TRACKING_URI"}


def _again(command: str, study: Path, *options: tuple[str, Any]) -> str:
    """The command line that repeats this one: every option given, so it acts on the same
    study (without them it would resume another one). An option whose URL has a password
    is written ``--storage "$SEARCHSVC_STORAGE"``, with a note to set that variable."""
    words, hidden = ["searchsvc", command, str(study)], []
    for flag, value in options:
        if value is True:
            words.append(flag)
        elif isinstance(value, list):  # a repeatable option (--set): each occurrence again
            for item in value:
                words += [flag, str(item)]
        elif flag in _SECRET_VARIABLE and value and redact_url(str(value)) != str(value):
            hidden.append(flag)
            words += [flag, f"${_SECRET_VARIABLE[flag]}"]
        elif value not in (None, False):
            words += [flag, str(value)]
    line = shlex.join(words)
    for flag in hidden:
        variable = _SECRET_VARIABLE[flag]
        line = line.replace(f"'${variable}'", f'"${variable}"')
        line += f" (with {variable} set to the {flag} URL you gave: its password is not shown)"
    return line


def _stopped(stage: str, signal: str, again: str, console: Console = out) -> typer.Exit:
    """Exit 130 for a command Ctrl-C or SIGTERM stopped, saying where and how to go on
    (on stderr after a ``--json`` document)."""
    by = f" by {signal}" if signal == "SIGTERM" else ""
    console.print(
        f"[yellow]interrupted{by}[/yellow] while {stage}; finished trials are kept. "
        f"Resume with: {again}",
        highlight=False,
        soft_wrap=True,  # one line on stderr too (err wraps at the terminal's width)
    )
    return typer.Exit(130)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    # Before anything is printed or logged: no password of a URL reaches the terminal or the log.
    redaction.install()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # MLflow configures its own loggers at import (INFO by default): keep its chatter out.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Nor its "View run ... at" line on stdout for every run it ends: the commands' stdout is
    # theirs (the runs' address is printed once, as the experiment's runs view).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@app.command()
def validate(
    study: StudyArg, sets: SetOpt = None, data_dir: DataDirOpt = None,
    address: AddressOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Check a study file, its data and its Ray address; say what it would run; starts nothing."""
    run_ = _prepare(study, sets, data_dir=data_dir)  # invalid: errors on stderr, exit 2
    try:
        run_.preflight(address)
    except StudySpecError as exc:
        raise _fail(exc) from None
    spec = run_.spec
    if as_json:
        _print_json({"study": str(study), "valid": True, "spec": spec.model_dump(mode="json")})
        return
    objectives = ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives)
    out.print(
        f"[green]ok[/green] {study}: study {spec.name!r}, trainer {spec.trainer}, dataset "
        f"{spec.dataset.name}, {len(spec.search_space)} params, {objectives}, sampler "
        f"{spec.sampler.name}, scheduler {spec.scheduler.name}, {spec.budget.n_trials} trials x "
        f"<= {spec.budget.max_epochs} epochs",
        highlight=False,
    )


@app.command()
def run(
    study: StudyArg,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Override budget.n_trials.")
    ] = None,
    tracking_uri: TrackingOpt = None, storage: StorageOpt = None, address: AddressOpt = None,
    workdir: WorkdirOpt = None, data_dir: DataDirOpt = None,
    no_ensemble: Annotated[bool, typer.Option("--no-ensemble", help="Skip the ensemble.")] = False,
    sets: SetOpt = None,
    strict_budget: Annotated[
        bool, typer.Option("--strict-budget", help="Exit 3 unless the trial budget is met.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Run the study (or resume it toward its budget)."""
    run_ = _prepare(
        study, sets, n_trials=n_trials, tracking_uri=tracking_uri, storage=storage,
        workdir=workdir, data_dir=data_dir,
    )  # fmt: skip
    from searchsvc.execution.runner import run_study

    again = _again(
        "run", study, ("--n-trials", n_trials), ("--tracking-uri", tracking_uri),
        ("--storage", storage), ("--address", address), ("--workdir", workdir),
        ("--data-dir", data_dir), ("--no-ensemble", no_ensemble), ("--set", sets),
        ("--strict-budget", strict_budget),
    )  # fmt: skip
    try:
        with stdout_to_stderr() if as_json else contextlib.nullcontext():
            result = run_study(run_, address=address, console=err, build_ensemble=not no_ensemble)
    except SearchsvcError as exc:
        failure = _fail(exc)
        if failure.exit_code == 1:  # the study may have started: its finished trials are kept
            err.print(f"finished trials are kept; resume with: {again}", highlight=False,
                      soft_wrap=True)  # fmt: skip
        raise failure from None
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_summary(result)
    if result.interrupted:
        raise _stopped(result.stopped_during, result.signal, again, err if as_json else out)
    if result.out_of_time:
        err.print(
            f"time budget of {run_.spec.budget.time_budget_s:g} s ran out: {result.finished} of "
            f"{result.budget} trials finished; continue with: {again}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if strict_budget and result.finished < result.budget:
        err.print(f"[red]error:[/red] --strict-budget: {result.finished} of {result.budget} "
                  "trials finished", highlight=False)  # fmt: skip
        raise typer.Exit(3)


def _print_summary(result: Any) -> None:  # a StudyResult (imported lazily)
    out.print(
        f"\nstudy [bold]{result.name}[/bold]: {result.finished}/{result.budget} trials finished "
        f"({result.complete} complete, {result.pruned} pruned, {result.failed} failed) "
        f"in {result.elapsed_s:.0f} s",
        highlight=False,
    )
    if result.top:
        from searchsvc.inspect.status import value_text

        pareto = len(result.metrics) > 1
        table = Table(title="Pareto front (validation)" if pareto else "top trials (validation)")
        table.add_column("trial", justify="right")
        for metric in result.metrics if pareto else ["value"]:
            table.add_column(metric, justify="right")
        table.add_column("epochs", justify="right")
        table.add_column("params")
        for row in result.top:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())
            values = [value_text(v) for v in (row.values if pareto else row.values[:1])]
            table.add_row(str(row.number), *values, str(row.epochs), params)
        out.print(table)
    if result.ensemble:
        _print_ensemble(result.ensemble)
    if result.report:
        out.print(f"report: {result.report}", highlight=False)
    if result.parent_run_id:
        out.print(f"MLflow: {result.paths.tracking_uri}  (parent run {result.parent_run_id})")
        out.print(f"open the UI: {result.paths.ui_command}", highlight=False)
        out.print(f"  the runs: {result.paths.runs_view(result.experiment_id)}", highlight=False)


def _print_ensemble(ensemble: Any) -> None:  # an EnsembleSummary (imported lazily)
    table = Table(title="test split (reported, never used to choose)")
    for column in ("model", "accuracy", "NLL", "ECE"):
        table.add_column(column, justify="right" if column != "model" else "left")
    refit = " (refit)" if ensemble.refit else ""
    for label, scores in (
        (f"best single trial{refit}", ensemble.best_single),
        (f"ensemble{refit}", ensemble.ensemble),
        ("best single trial (as searched)", ensemble.pre_refit_best_single),
        ("ensemble (as searched)", ensemble.pre_refit_ensemble),
    ):
        if scores is not None:
            table.add_row(
                label, f"{scores.accuracy:.4f}", f"{scores.nll:.4f}", f"{scores.ece:.4f}"
            )
    out.print(table)
    if ensemble.refit_failed:
        out.print(f"refit failed ({ensemble.refit_failed}): the members as searched are "
                  "registered", markup=False)  # fmt: skip
    for skipped in ensemble.skipped:
        out.print(f"skipped trial {skipped.trial}: {skipped.reason}", markup=False)
    if ensemble.registered == "best_single":
        verdict = (
            f"the best single trial alone (trial {ensemble.best_single_trial}), validation "
            f"NLL {ensemble.val_nll:.4f}: no ensemble of the candidates beat it"
        )
    else:
        margin = ensemble.best_single_val_nll - ensemble.val_nll
        verdict = (
            f"the ensemble of {len(ensemble.members)}, validation NLL "
            f"{ensemble.val_nll:.4f}, {margin:.4f} below the best single trial's "
            f"{ensemble.best_single_val_nll:.4f}"
        )
    if ensemble.refit:
        verdict += "; chosen before the refit, then refit on training + validation data"
    out.print(f"registered: {verdict}", highlight=False)
    if ensemble.model_uri:
        out.print(f"ensemble model: {ensemble.model_uri}", highlight=False)


def _member(trial: int, reseed: int) -> str:
    """``7`` for a trial, ``7-reseed-1`` for its first reseed."""
    return f"{trial}-reseed-{reseed}" if reseed else str(trial)


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@app.command()
def ensemble(
    study: StudyArg,
    method: Annotated[
        str | None, typer.Option("--method", help="greedy (default) or top_k.")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", min=1, help="Picks / k.")] = None,
    candidates: Annotated[
        int | None, typer.Option("--candidates", min=1, help="Best trials considered.")
    ] = None,
    tracking_uri: TrackingOpt = None, storage: StorageOpt = None, workdir: WorkdirOpt = None,
    data_dir: DataDirOpt = None, sets: SetOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Rebuild the study's ensemble with other settings; registers it if better."""
    if method not in (None, "greedy", "top_k"):
        raise _fail(StudySpecError(f"--method: unknown method {method!r}; expected greedy, top_k"))
    run_ = _prepare(
        study, sets, tracking_uri=tracking_uri, storage=storage, workdir=workdir,
        data_dir=data_dir,
    )  # fmt: skip
    from searchsvc.api import rebuild_ensemble

    _open_existing(run_)
    again = _again(
        "ensemble", study, ("--method", method), ("--size", size), ("--candidates", candidates),
        ("--tracking-uri", tracking_uri), ("--storage", storage), ("--workdir", workdir),
        ("--data-dir", data_dir), ("--set", sets),
    )  # fmt: skip
    try:
        with stdout_to_stderr() if as_json else contextlib.nullcontext():
            summary, outcome = rebuild_ensemble(
                run_, method=method, size=size, candidates=candidates
            )
    except SearchsvcError as exc:
        raise _fail(exc) from None
    if outcome.interrupted:
        raise _stopped(outcome.stage, outcome.signal, again, err if as_json else out)
    if as_json:
        _print_json(summary.to_json())
        return
    members = ", ".join(f"trial {_member(m.trial, m.reseed)} x{m.weight:.2f}"
                        for m in summary.members)  # fmt: skip
    out.print(f"members ({summary.method}): {members}", highlight=False)
    _print_ensemble(summary)


# The study commands (status, trials, best, ls, delete, dashboard) and the commands that use a
# study's model and results (predict, report) register themselves on `app`.
from searchsvc import cli_results as _cli_results  # noqa: E402, F401
from searchsvc import cli_study as _cli_study  # noqa: E402, F401
