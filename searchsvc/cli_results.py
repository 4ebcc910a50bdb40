"""The CLI commands that use a study's model and results: ``predict``, ``serve``, ``report``.

Registered on ``searchsvc.cli.app`` (this module is imported at the end of ``cli``); thin
wrappers over the Python API (``searchsvc.api``) that print and choose the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchsvc.cli import (
    SetOpt,
    StorageOpt,
    StudyArg,
    TrackingOpt,
    WorkdirOpt,
    _again,
    _fail,
    _open_existing,
    _prepare,
    _print_ensemble,
    _stopped,
    app,
    err,
    out,
)
from searchsvc.completion import study_files
from searchsvc.errors import SearchsvcError, StudySpecError


@app.command()
def predict(
    study: Annotated[
        str,
        typer.Argument(help="A study file or an MLflow model URI.", autocompletion=study_files),
    ],
    inputs: Annotated[Path, typer.Argument(help="A .npy file of inputs (n, features) or images.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write a CSV (label + probabilities).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda:0.")] = "cpu",
) -> None:  # fmt: skip
    """Predict labels with a study's ensemble: one label per line, or a CSV."""
    import numpy as np

    from searchsvc.api import load_ensemble

    if not inputs.is_file():
        raise _fail(SearchsvcError(f"{inputs}: no such file"))
    try:
        x = np.load(inputs, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _fail(SearchsvcError(f"{inputs}: not a readable .npy array: {exc}")) from None
    try:
        model = load_ensemble(study, device=device)
        probs = model.predict_proba(x)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    labels = probs.argmax(axis=1)
    if output is None:
        out.print("\n".join(str(int(label)) for label in labels), highlight=False)
        return
    header = "label," + ",".join(f"p{k}" for k in range(probs.shape[1]))
    rows = np.column_stack([labels, probs])
    tmp = output.with_name(output.name + ".part")
    np.savetxt(
        tmp,
        rows,
        delimiter=",",
        header=header,
        comments="",
        fmt=["%d"] + ["%.6f"] * probs.shape[1],
    )
    tmp.replace(output)  # never leave a half-written CSV behind
    err.print(f"wrote {len(labels)} predictions to {output}")


@app.command()
def report(
    study: StudyArg,
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help="Comma-separated params to compare groups by."),
    ] = None,
    tracking_uri: TrackingOpt = None, storage: StorageOpt = None, workdir: WorkdirOpt = None,
    sets: SetOpt = None,
) -> None:  # fmt: skip
    """Write the study's HTML report and figures, and log them to its MLflow parent run."""
    run_ = _prepare(study, sets, tracking_uri=tracking_uri, storage=storage, workdir=workdir)
    from searchsvc.api import report_study

    spec = run_.spec
    if group_by:
        unknown = [k for k in group_by.split(",") if k not in spec.search_space]
        if unknown:
            raise _fail(
                StudySpecError(f"--group-by: {', '.join(unknown)} not in search_space of {study}")
            )
    _open_existing(run_)
    again = _again(
        "report", study, ("--group-by", group_by), ("--tracking-uri", tracking_uri),
        ("--storage", storage), ("--workdir", workdir), ("--set", sets),
    )  # fmt: skip
    try:
        index, outcome = report_study(run_, group_by=group_by)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    if outcome.interrupted:
        raise _stopped(outcome.stage, outcome.signal, again)
    out.print(f"report: {index}", highlight=False)


@app.command()
def serve(
    study: Annotated[
        str,
        typer.Argument(help="A study file or an MLflow model URI.", autocompletion=study_files),
    ],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 5001,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda:0.")] = "cpu",
) -> None:  # fmt: skip
    """Serve the study's champion ensemble over HTTP: MLflow's /invocations request format,
    refused input answered with HTTP 400 and a one-line JSON error."""
    import socket

    from searchsvc.api import load_ensemble

    with socket.socket() as probe:  # say so now, not after the model has loaded
        try:
            probe.bind((host, port))
        except OSError as exc:
            problem = f"cannot listen on {host}:{port}: {exc.strerror}"
            raise _fail(SearchsvcError(problem)) from None
    try:
        model = load_ensemble(study, device=device)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    from searchsvc.ensemble.server import serve as serve_http

    err.print(
        f"serving {study} ({len(model.members)} members) at http://{host}:{port}/invocations "
        "(Ctrl-C stops)",
        highlight=False,
    )
    serve_http(model, host=host, port=port)


@app.command()
def sync(
    study: StudyArg,
    tracking_uri: TrackingOpt = None, storage: StorageOpt = None, workdir: WorkdirOpt = None,
    sets: SetOpt = None,
) -> None:  # fmt: skip
    """Write the MLflow updates a run journaled while the server was away, and check that
    Optuna and MLflow agree on every trial since the last check."""
    from searchsvc.api import sync_study

    run_ = _prepare(study, sets, tracking_uri=tracking_uri, storage=storage, workdir=workdir)
    _open_existing(run_)
    again = _again(
        "sync", study, ("--tracking-uri", tracking_uri), ("--storage", storage),
        ("--workdir", workdir), ("--set", sets),
    )  # fmt: skip
    try:
        synced = sync_study(run_)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    found = synced.reconciled
    if synced.outcome.interrupted or found is None:
        raise _stopped(synced.outcome.stage, synced.outcome.signal, again)
    out.print(
        f"MLflow: wrote {synced.journaled} journaled update(s); checked {found.checked} "
        f"trial(s) since the last check, {found.problems} with a problem (tagged "
        "searchsvc.reconcile)",
        highlight=False,
    )
    if synced.ensemble is not None:
        out.print("the ensemble the run owed:", highlight=False)
        _print_ensemble(synced.ensemble)
        out.print(f"report: {synced.report}", highlight=False)
    elif synced.ensemble_not_built:
        err.print(synced.ensemble_not_built, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
