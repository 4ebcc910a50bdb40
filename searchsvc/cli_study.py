"""The study commands of the CLI: ``status``, ``trials``, ``best``, ``ls``, ``delete``,
``dashboard``.

Registered on ``searchsvc.cli.app`` (this module is imported at the end of ``cli``); like the
rest of the CLI they are thin wrappers over library functions (``searchsvc.inspect``), print,
and choose the exit code: 2 for bad input (before anything changes), 1 for other errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from searchsvc.cli import (
    JsonOpt,
    SetOpt,
    StorageOpt,
    StudyArg,
    TrackingOpt,
    WorkdirOpt,
    _fail,
    _fmt,
    _open_existing,
    _prepare,
    _print_json,
    app,
    err,
    out,
)
from searchsvc.completion import study_files
from searchsvc.errors import SearchsvcError, StudySpecError
from searchsvc.inspect.target import StudyTarget

StudyFileArg = Annotated[
    Path | None,
    typer.Argument(
        help="The study file (YAML); or give --name and --storage instead.",
        show_default=False,
        autocompletion=study_files,
    ),
]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="A study known only by its storage (with --storage)."),
]


def _target(
    study: Path | None,
    name: str | None,
    storage: str | None,
    tracking_uri: str | None,
    workdir: Path | None,
    sets: list[str] | None,
) -> StudyTarget:
    """The study a command acts on: a study file with its options, or ``--name`` in a
    ``--storage``; bad input exits 2 before anything is opened."""
    from searchsvc.inspect.target import target_by_name, target_of_run

    if (study is None) == (name is None):
        raise _fail(StudySpecError("give a study file or --name NAME --storage URL (not both)"))
    if study is not None:
        return target_of_run(
            _prepare(study, sets, storage=storage, tracking_uri=tracking_uri, workdir=workdir)
        )
    if sets or workdir:
        flag = "--set" if sets else "--workdir"
        raise _fail(StudySpecError(f"{flag}: needs a study file, not --name"))
    try:
        return target_by_name(name or "", storage, tracking_uri)
    except StudySpecError as exc:
        raise _fail(exc) from None


@app.command()
def trials(
    # Which study: a file, or a name in a storage; the file's locations and overrides.
    study: StudyFileArg = None, name: NameOpt = None, storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = None, sets: SetOpt = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table, csv or json.", show_default=True)
    ] = "table",
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only these states (repeatable or comma-separated)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """One row per trial: state, values, params, epochs, diagnosis, duration, MLflow run."""
    from searchsvc.inspect.trials import parse_states, table_records, trials_table

    if output_format not in ("table", "csv", "json"):
        shown = f"--format: unknown format {output_format!r}; expected table, csv, json"
        raise _fail(StudySpecError(shown))
    try:
        states = parse_states(state or [])
    except StudySpecError as exc:
        raise _fail(exc) from None
    target = _target(study, name, storage, tracking_uri, workdir, sets)
    try:
        frame = trials_table(target, states)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    if as_json or output_format == "json":
        _print_json(table_records(frame))
    elif output_format == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        shown = frame.astype(object).where(frame.notna(), "-")
        out.print(shown.to_string(index=False), highlight=False, markup=False)


@app.command()
def best(
    # Which study: a file, or a name in a storage; the file's locations and overrides.
    study: StudyFileArg = None, name: NameOpt = None, storage: StorageOpt = None,
    workdir: WorkdirOpt = None, sets: SetOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the fragment to this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """The best params as a study-file fragment (search_space of constants); several
    objectives: the Pareto trials, best first by the first objective."""
    from searchsvc.inspect.best import best_trials, fragments_yaml

    if output is not None and not output.parent.is_dir():
        raise _fail(StudySpecError(f"--output: folder {output.parent} does not exist"))
    target = _target(study, name, storage, None, workdir, sets)
    try:
        found = best_trials(target)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    text = fragments_yaml(found, target)
    if output is not None:
        part = output.with_name(output.name + ".part")
        part.write_text(text, encoding="utf-8")
        part.replace(output)  # never leave a half-written fragment behind
    if as_json:
        _print_json([trial.to_dict() for trial in found])
    elif output is None:
        print(text, end="")
    else:
        err.print(f"wrote {output} (trial {found[0].number})", highlight=False)


@app.command("ls")
def list_command(
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where study folders are (each with optuna.db).")
    ] = Path("runs"),
    storage: StorageOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Every study found: trials by state, best value, last activity."""
    from searchsvc.inspect.listing import list_studies

    if runs_dir != Path("runs") and not runs_dir.is_dir():
        raise _fail(StudySpecError(f"--runs-dir: {runs_dir} is not a folder"))
    try:
        found = list_studies(runs_dir, storage)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    if as_json:
        _print_json([listing.to_dict() for listing in found])
        return
    table = Table(title=f"{len(found)} studies")
    for column in ("study", "trials", "best", "last activity", "storage"):
        table.add_column(column)
    for s in found:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in s.trials.items()) or "none"
        best_value = "-" if s.best_value is None else f"{s.best_value:.4f}"
        table.add_row(s.name, counts, best_value, s.last_activity or "-", s.storage)
    out.print(table)


@app.command()
def delete(
    # Which study: a file, or a name in a storage; the file's locations and overrides.
    study: StudyFileArg = None, name: NameOpt = None, storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None, workdir: WorkdirOpt = None, sets: SetOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:  # fmt: skip
    """Delete a study: its Optuna study, MLflow experiment, registered model and folder."""
    import sys

    from searchsvc.inspect.delete import delete_study, plan_deletion

    target = _target(study, name, storage, tracking_uri, workdir, sets)
    try:
        plan = plan_deletion(target)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    if not yes:
        if not sys.stdin.isatty():
            raise _fail(StudySpecError(
                f"{target.where}: not deleting study {target.name!r} without --yes "
                "(no terminal to ask)"
            ))  # fmt: skip
        out.print("this deletes:\n  " + "\n  ".join(plan.lines()), highlight=False)
        if not typer.confirm("delete?", default=False):
            raise typer.Exit(1)
    try:
        done = delete_study(plan)
    except Exception as exc:  # MLflow and Optuna raise many types; one line, exit 1
        raise _fail(SearchsvcError(f"{target.where}: deletion stopped: {exc}")) from None
    for line in done:
        out.print(line, highlight=False)


@app.command()
def status(
    study: StudyArg, storage: StorageOpt = None, workdir: WorkdirOpt = None,
    sets: SetOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Trials done / pruned / failed / running and the best so far, from Optuna storage."""
    run_ = _prepare(study, sets, storage=storage, workdir=workdir)
    from searchsvc.inspect.status import study_status

    _open_existing(run_)
    state = study_status(run_)
    if as_json:
        _print_json(state.to_dict())
        return
    out.print(
        f"study {state.name}: {state.finished}/{state.budget} finished  "
        f"complete {state.complete}  pruned {state.pruned} (diverged {state.diverged})  "
        f"failed {state.failed}  running {state.running}  interrupted {state.interrupted}"
        + (f"  (+{state.warm} warm-start trials)" if state.warm else ""),
        highlight=False,
    )
    if state.diagnoses:
        shown = "  ".join(f"{k} {v}" for k, v in state.diagnoses.items())
        out.print(f"diagnosis: {shown}", highlight=False)
    from searchsvc.inspect.status import objective_text

    if state.pareto:
        out.print(f"Pareto front: {len(state.best)} trials, by {state.metric}", highlight=False)
    for rank, trial in enumerate(state.best):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        label = "pareto" if state.pareto else "best" if rank == 0 else f"#{rank + 1}"
        out.print(
            f"{label}: trial {trial.number} {objective_text(state.metrics, trial.values)} "
            f"[{trial.diagnosis or '?'}]  {params}",
            highlight=False,
            markup=False,
        )
    if state.ensemble_owed:
        out.print(f"ensemble owed: {state.ensemble_owed} (`searchsvc sync {study}` builds it)",
                  highlight=False, markup=False)  # fmt: skip
    out.print(f"storage: {state.storage}", highlight=False)


@app.command()
def dashboard(
    # Which study: a file, or a name in a storage; the file's locations and overrides.
    study: StudyFileArg = None, name: NameOpt = None, storage: StorageOpt = None,
    workdir: WorkdirOpt = None, sets: SetOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback unless given).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8080,
) -> None:  # fmt: skip
    """optuna-dashboard on the study's Optuna storage, until Ctrl-C."""
    from searchsvc.inspect.dashboard import open_dashboard

    target = _target(study, name, storage, None, workdir, sets)
    try:
        board = open_dashboard(target, host=host, port=port)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    err.print(f"optuna-dashboard of study {board.name!r}: {board.url}  (Ctrl-C stops it)",
              highlight=False, soft_wrap=True)  # fmt: skip
    try:
        board.serve()
    except SearchsvcError as exc:
        raise _fail(exc) from None
    err.print("dashboard stopped", highlight=False)
