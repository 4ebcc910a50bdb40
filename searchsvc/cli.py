"""The ``searchsvc`` command line: thin wrappers over the library, and the only place that
prints or chooses exit codes (2: bad study file or usage, 1: any other searchsvc error)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from searchsvc.errors import SearchsvcError, StudySpecError
from searchsvc.loader import Study, load_study
from searchsvc.paths import StudyPaths, resolve_paths
from searchsvc.spec import StudySpec

app = typer.Typer(
    name="searchsvc",
    help="Hyperparameter search for deep networks: Optuna + Ray Tune + MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

StudyArg = Annotated[Path, typer.Argument(help="The study file (YAML).", show_default=False)]
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


def _fail(exc: SearchsvcError) -> typer.Exit:
    code = 2 if isinstance(exc, StudySpecError) else 1
    for line in str(exc).splitlines():
        err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(path: Path, data_dir: Path | None = None) -> Study:
    try:
        study = load_study(path)
    except StudySpecError as exc:
        raise _fail(exc) from None
    if data_dir is None:
        return study
    if not data_dir.is_dir():
        raise _fail(StudySpecError(f"--data-dir: {data_dir} is not a folder"))
    # The option beats the study file's dataset.data_dir, as every option beats the file.
    dataset = study.spec.dataset.model_copy(update={"data_dir": str(data_dir.resolve())})
    return dataclasses.replace(study, spec=study.spec.model_copy(update={"dataset": dataset}))


def _paths(spec: StudySpec, **locations: Any) -> StudyPaths:
    """The study's locations; a malformed URL is an input error (exit 2), before anything."""
    try:
        return resolve_paths(spec, **locations)
    except StudySpecError as exc:
        raise _fail(exc) from None


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # MLflow configures its own loggers at import (INFO by default): keep its chatter out.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@app.command()
def validate(study: StudyArg) -> None:
    """Check a study file and say what it would run; starts nothing."""
    loaded = _load(study)
    spec = loaded.spec
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
    tracking_uri: TrackingOpt = None,
    storage: StorageOpt = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address, e.g. auto.")
    ] = None,
    workdir: WorkdirOpt = None,
    data_dir: DataDirOpt = None,
    no_ensemble: Annotated[bool, typer.Option("--no-ensemble", help="Skip the ensemble.")] = False,
) -> None:
    """Run the study (or resume it toward its budget)."""
    loaded = _load(study, data_dir)
    from searchsvc.runner import run_study

    try:
        result = run_study(
            loaded,
            n_trials=n_trials,
            tracking_uri=tracking_uri,
            storage=storage,
            address=address,
            workdir=workdir,
            console=err,
            build_ensemble=not no_ensemble,
        )
    except SearchsvcError as exc:
        raise _fail(exc) from None
    # The resume hint repeats every option given: without them it would resume another study.
    resume = ["searchsvc", "run", str(study)]
    for flag, value in (
        ("--n-trials", n_trials),
        ("--tracking-uri", tracking_uri),
        ("--storage", storage),
        ("--address", address),
        ("--workdir", workdir),
    ):
        if value is not None:
            resume += [flag, str(value)]
    if no_ensemble:
        resume.append("--no-ensemble")
    _print_summary(result, shlex.join(resume))
    if result.interrupted:
        raise typer.Exit(130)


def _print_summary(result, resume_command: str) -> None:  # noqa: ANN001 - StudyResult, lazy
    out.print(
        f"\nstudy [bold]{result.name}[/bold]: {result.finished}/{result.budget} trials finished "
        f"({result.complete} complete, {result.pruned} pruned, {result.failed} failed) "
        f"in {result.elapsed_s:.0f} s",
        highlight=False,
    )
    if result.top:
        table = Table(title="top trials (validation)")
        table.add_column("trial", justify="right")
        table.add_column("value", justify="right")
        table.add_column("epochs", justify="right")
        table.add_column("params")
        for row in result.top:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
            table.add_row(str(row["number"]), f"{row['value']:.4f}", str(row["epochs"]), params)
        out.print(table)
    if result.ensemble:
        _print_ensemble(result.ensemble)
    if result.report:
        out.print(f"report: {result.report}", highlight=False)
    if result.interrupted:
        out.print(
            f"[yellow]interrupted[/yellow]: finished trials are kept. Resume with: "
            f"{resume_command}",
            highlight=False,
        )
    out.print(f"MLflow: {result.paths.tracking_uri}  (parent run {result.parent_run_id})")
    out.print(f"open the UI: {result.paths.ui_command}", highlight=False)


def _print_ensemble(ensemble: dict) -> None:
    table = Table(title="test split (reported, never used to choose)")
    for column in ("model", "accuracy", "NLL", "ECE"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for label, key in (("best single trial", "best_single"), ("ensemble", "ensemble")):
        scores = ensemble.get(key)
        if scores:
            table.add_row(
                label,
                f"{scores['accuracy']:.4f}",
                f"{scores['nll']:.4f}",
                f"{scores['ece']:.4f}",
            )
    out.print(table)
    if ensemble.get("model_uri"):
        out.print(f"ensemble model: {ensemble['model_uri']}", highlight=False)


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@app.command()
def status(
    study: StudyArg,
    storage: StorageOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Trials done / pruned / failed / running and the best so far, from Optuna storage."""
    loaded = _load(study)
    from searchsvc.storage import BUDGET_ATTR, count_trials, open_study, top_trials

    spec = loaded.spec
    paths = _paths(spec, storage=storage, workdir=workdir)
    try:
        optuna_study = open_study(spec, paths.storage_url, create=False)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    counts = count_trials(optuna_study)
    budget = optuna_study.user_attrs.get(BUDGET_ATTR, spec.budget.n_trials)
    out.print(
        f"study {spec.name}: {counts.finished}/{budget} finished  "
        f"complete {counts.complete}  pruned {counts.pruned} (diverged {counts.diverged})  "
        f"failed {counts.failed}  running {counts.running}  interrupted {counts.interrupted}",
        highlight=False,
    )
    if counts.diagnoses:
        shown = "  ".join(f"{k} {v}" for k, v in sorted(counts.diagnoses.items()))
        out.print(f"diagnosis: {shown}", highlight=False)
    best = top_trials(optuna_study, spec, 3)
    for rank, trial in enumerate(best):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        label = "best" if rank == 0 else f"#{rank + 1}"
        out.print(
            f"{label}: trial {trial.number} {spec.primary.metric}={trial.values[0]:.4f} "
            f"[{trial.user_attrs.get('diagnosis', '?')}]  {params}",
            highlight=False,
            markup=False,
        )
    out.print(f"storage: {paths.storage_url}", highlight=False)


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
    tracking_uri: TrackingOpt = None,
    storage: StorageOpt = None,
    workdir: WorkdirOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rebuild the study's ensemble with other settings; registers it if better."""
    loaded = _load(study, data_dir)
    if method not in (None, "greedy", "top_k"):
        raise _fail(StudySpecError(f"--method: unknown method {method!r}; expected greedy, top_k"))
    from searchsvc.registry import resolve_trainer
    from searchsvc.runner import load_study_data
    from searchsvc.study_ensemble import build_study_ensemble
    from searchsvc.tracking import StudyTracker

    spec = loaded.spec
    paths = _paths(spec, tracking_uri=tracking_uri, storage=storage, workdir=workdir)
    try:
        tracker = StudyTracker(paths.tracking_uri, artifact_location=paths.artifact_location)
        tracker.start_study(spec, loaded.text)
        summary = build_study_ensemble(
            spec, paths, tracker, load_study_data(spec), resolve_trainer(spec.trainer),
            method=method, size=size, candidates=candidates,
        )  # fmt: skip
        tracker.end_study()
    except SearchsvcError as exc:
        raise _fail(exc) from None
    members = ", ".join(f"trial {m['trial']} x{m['weight']:.2f}" for m in summary["members"])
    out.print(f"members ({summary['method']}): {members}", highlight=False)
    _print_ensemble(summary)


@app.command()
def predict(
    study: Annotated[str, typer.Argument(help="A study file or an MLflow model URI.")],
    inputs: Annotated[Path, typer.Argument(help="A .npy file of inputs (n, features) or images.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write a CSV (label + probabilities).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda:0.")] = "cpu",
) -> None:
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
    tracking_uri: TrackingOpt = None,
    storage: StorageOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Write the study's HTML report and figures, and log them to its MLflow parent run."""
    loaded = _load(study)
    from searchsvc.report import write_report

    spec = loaded.spec
    if group_by:
        unknown = [k for k in group_by.split(",") if k not in spec.search_space]
        if unknown:
            raise _fail(
                StudySpecError(f"--group-by: {', '.join(unknown)} not in search_space of {study}")
            )
    paths = _paths(spec, tracking_uri=tracking_uri, storage=storage, workdir=workdir)
    try:
        index = write_report(spec, paths, group_by=group_by)
    except SearchsvcError as exc:
        raise _fail(exc) from None
    out.print(f"report: {index}", highlight=False)
