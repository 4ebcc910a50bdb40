"""The study commands of the CLI: ``trials``, ``best``, ``ls``, ``delete``, ``dashboard``.

Registered on ``searchsvc.cli.app`` (this module is imported at the end of ``cli``); like the
rest of the CLI they are thin wrappers over library functions (``searchsvc.inspect``), print,
and choose the exit code: 2 for bad input (before anything changes), 1 for other errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchsvc.cli import (
    JsonOpt,
    SetOpt,
    StorageOpt,
    TrackingOpt,
    WorkdirOpt,
    _fail,
    _prepare,
    _print_json,
    app,
    err,
    out,
)
from searchsvc.errors import SearchsvcError, StudySpecError
from searchsvc.inspect.target import StudyTarget

StudyFileArg = Annotated[
    Path | None,
    typer.Argument(
        help="The study file (YAML); or give --name and --storage instead.", show_default=False
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
    study: StudyFileArg = None,
    name: NameOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    workdir: WorkdirOpt = None,
    sets: SetOpt = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table, csv or json.", show_default=True)
    ] = "table",
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only these states (repeatable or comma-separated)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
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
    study: StudyFileArg = None,
    name: NameOpt = None,
    storage: StorageOpt = None,
    workdir: WorkdirOpt = None,
    sets: SetOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the fragment to this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
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
