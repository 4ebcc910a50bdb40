"""The visual report of a study: one self-contained HTML page with figures, beside the study.

``write_report`` reads the Optuna study (trial states, values, times) and the MLflow runs
(per-epoch metric histories, activation histograms, the parent run's ensemble scores) and
writes ``<workdir>/report/index.html`` plus PNG figures, then attaches the folder to the
study's parent run under ``report/`` so the MLflow UI shows it too.

Figures: optimisation history, parameter importances, parallel coordinates, learning curves of
the best trials, trial outcomes over wall-clock time, ensemble vs best single model and, for
comparison studies (``group_by`` or a grid sampler), per-group curves, activation histograms
and a per-layer table. A figure that cannot be drawn (too few trials, no such metric) becomes
a note on the page instead of an error: a report is most needed when a study went wrong.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from optuna.trial import FrozenTrial, TrialState

from searchsvc.errors import StudySpecError, TrackingError
from searchsvc.search.storage import INTERRUPTED, top_trials
from searchsvc.study.spec import CategoricalParam, IntParam, StudySpec
from searchsvc.study_run import StudyRun
from searchsvc.tracking import TAG_PARENT, TAG_TRIAL

matplotlib.use("Agg")  # a service has no display; must come before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["REPORT_DIR", "write_report"]

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
"""Folder name of the report, both in the study's workdir and in the parent run's artifacts."""

DPI = 110
N_CURVES = 5  # learning curves of this many best trials: more lines are unreadable
N_TOP = 10  # rows of the top-trials table
_LAYER_METRIC = re.compile(r"^(act_std|saturated|dead)_(\d+)$")
_HISTOGRAM = re.compile(r"^activations_epoch_(\d+)\.png$")
_ENSEMBLE_METRICS = (
    ("accuracy", "test accuracy (fraction)", "higher is better"),
    ("nll", "test NLL (nats/sample)", "lower is better"),
    ("ece", "test ECE (fraction)", "lower is better"),
)
_STATE_STYLE = {  # label, colour, marker: the same everywhere on the page
    "COMPLETE": ("completed", "tab:blue", "o"),
    "PRUNED": ("pruned", "tab:orange", "x"),
    "FAIL": ("failed", "tab:red", "s"),
    "INTERRUPTED": ("interrupted", "tab:gray", "d"),
}


# --------------------------------------------------------------------------- public API


def write_report(
    run: StudyRun,
    *,
    group_by: str | None = None,
    log_to_mlflow: bool = True,
) -> Path:
    """Write the study's HTML report with its figures and return the path of ``index.html``.

    The report is built in a temporary folder beside ``<paths.workdir>/report/`` and swapped
    in at the end, so a crash never leaves a half-written report.

    Args:
        run: The study run: its spec, locations, Optuna study and tracker as the command
            opened them (``study`` None: a page that says there are no trials yet; no tracker:
            the study's parent run is looked up, creating nothing).
        group_by: Comma-separated param names whose values define the groups of a comparison
            study, e.g. ``"init,activation"``. ``None``: with a grid sampler, every categorical
            param with more than one choice; otherwise no comparison section.
        log_to_mlflow: Also attach the report folder to the study's parent run, under
            ``report/``.

    Returns:
        The path of the written ``index.html``.

    Raises:
        StudySpecError: ``group_by`` names a param that is not in the search space.
        TrackingError: MLflow refused the report's artifacts (the local report is written).
    """
    spec, paths = run.spec, run.paths
    group_params = _group_params(spec, group_by)
    paths.workdir.mkdir(parents=True, exist_ok=True)  # the default stores live in it
    data = _StudyData.load(run)
    final = paths.workdir / REPORT_DIR
    build = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}-", dir=paths.workdir))
    build.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
    try:
        _build(data, build, group_params)
        _swap_in(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    logger.info("report written to %s", final / "index.html")
    if log_to_mlflow:
        _log_to_parent(data, final)
    return final / "index.html"


# --------------------------------------------------------------------------- reading the study


@dataclass
class _StudyData:
    """Everything the report reads, fetched once: Optuna trials and MLflow runs."""

    spec: StudySpec
    trials: list[FrozenTrial]
    study: optuna.Study | None
    client: MlflowClient | None  # None: no MLflow store for this study
    parent: Run | None
    runs: dict[int, Run]  # trial number -> child run
    _series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def load(cls, run: StudyRun) -> _StudyData:
        study = run.study
        trials = list(study.get_trials(deepcopy=False)) if study is not None else []
        tracker = run.tracker if run.tracker is not None else run.attach_tracking()
        client = tracker.client if tracker is not None else None
        parent = None
        if tracker is not None and tracker.parent_run_id:
            parent = client.get_run(tracker.parent_run_id)
        runs = _child_runs(client, parent) if parent is not None else {}
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


def _child_runs(client: MlflowClient, parent: Run) -> dict[int, Run]:
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'",
        max_results=50000,
        order_by=["attributes.start_time ASC"],
    )
    return {int(r.data.tags[TAG_TRIAL]): r for r in runs if TAG_TRIAL in r.data.tags}


def _group_params(spec: StudySpec, group_by: str | None) -> list[str]:
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


def _metric_label(metric: str) -> str:
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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _state_key(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED):
        return "INTERRUPTED"
    return trial.state.name


def _last_intermediate(trial: FrozenTrial) -> tuple[int, float] | None:
    finite = [(s, v) for s, v in trial.intermediate_values.items() if math.isfinite(v)]
    return max(finite) if finite else None


def _primary(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "(none)"


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _epoch_axis(ax: Any) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5"
    ax.grid(alpha=0.3)


@contextmanager
def _quiet_downloads() -> Iterator[None]:
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


@dataclass(frozen=True)
class _Section:
    """One figure of the page, or the note that says why it is missing."""

    title: str
    caption: str
    image: str | None = None
    note: str | None = None


# --------------------------------------------------------------------------- figures


def _fig_history(data: _StudyData, out: Path) -> _Section:
    title = "Optimisation history"
    primary = data.spec.primary
    complete = data.with_state(TrialState.COMPLETE)
    pruned = [(t, _last_intermediate(t)) for t in data.with_state(TrialState.PRUNED)]
    pruned = [(t, last) for t, last in pruned if last is not None]
    if not complete and not pruned:
        return _Section(title, "", note="No trial has reported a value yet.")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if complete:
        xs = np.array([t.number for t in complete])
        ys = np.array([_primary(t) for t in complete])
        label, colour, marker = _STATE_STYLE["COMPLETE"]
        ax.scatter(xs, ys, c=colour, marker=marker, s=28, label=f"{label} (final value)")
        best = np.maximum.accumulate(ys) if primary.mode == "max" else np.minimum.accumulate(ys)
        ax.step(xs, best, where="post", color="tab:green", linewidth=2, label="best so far")
    if pruned:
        label, colour, marker = _STATE_STYLE["PRUNED"]
        ax.scatter(
            [t.number for t, _ in pruned],
            [last[1] for _, last in pruned],
            c=colour, marker=marker, s=36, label=f"{label} (last reported value)",
        )  # fmt: skip
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_metric_label(primary.metric))
    ax.set_title(f"Optimisation history: {primary.mode} {primary.metric}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    caption = (
        f"Objective ({primary.metric}, {primary.mode}) of every trial against its number: "
        "completed trials at their final value (that of their best epoch), pruned ones at the "
        "last epoch they reported; the line is the best completed value so far."
    )
    return _Section(title, caption, image=_save(fig, out, "history.png"))


def _importance_target(spec: StudySpec) -> Callable[[FrozenTrial], float] | None:
    # Multi-objective studies need an explicit target; the primary objective is what we rank by.
    return _primary if len(spec.objectives) > 1 else None


def _fig_importance(data: _StudyData, out: Path) -> _Section:
    title = "Parameter importances"
    if data.study is None or len(data.with_state(TrialState.COMPLETE)) < 2:
        return _Section(title, "", note="Needs at least 2 completed trials.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental / few-trials warnings: noise here
            importances = optuna.importance.get_param_importances(
                data.study, target=_importance_target(data.spec)
            )
    except Exception as exc:  # too few distinct values, one param only ...: say so, go on
        logger.info("parameter importances skipped: %s", exc)
        return _Section(title, "", note=f"Optuna could not compute importances: {exc}")
    if not importances:
        return _Section(title, "", note="No parameter varied across the completed trials.")
    names = list(importances)[::-1]  # most important on top
    values = [float(importances[n]) for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.6))
    ax.barh(names, values, color="tab:blue")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center")
    ax.set_xlabel("relative importance (fraction of total)")
    ax.set_ylabel("parameter")
    ax.set_xlim(0, max(values) * 1.15 or 1)
    ax.set_title(f"Parameter importances for {data.spec.primary.metric}")
    caption = (
        "Share of the objective's variation over completed trials explained by each parameter "
        "(Optuna's default evaluator, PED-ANOVA); a rough guide on few trials."
    )
    return _Section(title, caption, image=_save(fig, out, "importances.png"))


def _param_axis_label(spec: StudySpec, name: str) -> str:
    """A parameter axis label: the name and its scale (hyperparameters carry no units)."""
    param = spec.search_space.get(name)
    if isinstance(param, CategoricalParam):
        return f"{name} (choice)"
    scale = ["integer"] if isinstance(param, IntParam) else []
    scale += ["log scale"] if getattr(param, "log", False) else []
    return f"{name} ({', '.join(scale)})" if scale else name


def _fig_parallel(data: _StudyData, out: Path) -> _Section:
    title = "Parallel coordinates"
    if data.study is None or len(data.with_state(TrialState.COMPLETE)) < 2:
        return _Section(title, "", note="Needs at least 2 completed trials.")
    objective = _metric_label(data.spec.primary.metric)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(
                data.study, target=_importance_target(data.spec), target_name=objective
            )
    except Exception as exc:
        logger.info("parallel coordinates skipped: %s", exc)
        return _Section(title, "", note=f"Optuna could not draw parallel coordinates: {exc}")
    fig = ax.figure
    fig.set_size_inches(max(8.0, 1.6 * len(data.spec.search_space) + 3), 5.5)
    # Optuna titles the axes "Parallel Coordinate Plot" and labels no axis: the objective axis
    # is the main axes' y axis, each parameter axis a twin whose y axis is drawn at x = i + 1.
    ax.set_title("")
    fig.suptitle(f"Parallel coordinates: params of completed trials vs {objective}")
    ax.set_ylabel(objective)
    ax.set_xlabel("objective, then each parameter (its own scale)")
    names = [label.get_text() for label in ax.get_xticklabels()][1:]
    siblings = ax.get_shared_x_axes().get_siblings(ax)
    twins = sorted(
        (a for a in fig.axes if a is not ax and a in siblings),
        key=lambda a: a.spines["right"].get_position()[1],  # ("axes", (i + 1) / n_params)
    )
    for twin, name in zip(twins, names, strict=False):
        # Above its own axis, horizontal: a rotated label would lie across the trial lines.
        twin.set_ylabel(_param_axis_label(data.spec, name), rotation=0, ha="center", va="bottom")
        twin.yaxis.set_label_coords(twin.spines["right"].get_position()[1], 1.03)
    caption = (
        "Each line is a completed trial through its parameter values (each axis in the "
        "parameter's own units and range); colour is the objective."
    )
    return _Section(title, caption, image=_save(fig, out, "parallel.png"))


_CURVES = (
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    ("val_accuracy", "validation accuracy"),
)


def _fig_learning_curves(data: _StudyData, out: Path) -> _Section:
    title = f"Learning curves of the top {N_CURVES} trials"
    best = top_trials(data.study, data.spec, N_CURVES) if data.study is not None else []
    if not best:
        return _Section(title, "", note="No completed trial yet.")
    fig, axes = plt.subplots(1, len(_CURVES), figsize=(13.5, 4.4), layout="constrained")
    drawn = 0
    for rank, trial in enumerate(best):
        colour = plt.cm.tab10(rank)
        for ax, (key, _) in zip(axes, _CURVES, strict=True):
            series = data.series(trial.number, key)
            if series is not None:
                drawn += 1
                ax.plot(*series, marker=".", color=colour, label=f"trial {trial.number}")
    if not drawn:
        plt.close(fig)
        return _Section(title, "", note="MLflow holds no per-epoch metrics for these trials.")
    for ax, (key, name) in zip(axes, _CURVES, strict=True):
        ax.set_title(name)
        ax.set_ylabel(_metric_label(key))
        _epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.suptitle(f"Learning curves of the {len(best)} best completed trials")
    caption = (
        "Per-epoch training loss, validation loss and validation accuracy of the best "
        f"completed trials by {data.spec.primary.metric}, from the MLflow metric histories."
    )
    return _Section(title, caption, image=_save(fig, out, "learning_curves.png"))


def _fig_outcomes_over_time(data: _StudyData, out: Path) -> _Section:
    title = "Trial outcomes over time"
    starts = [t.datetime_start for t in data.trials if t.datetime_start is not None]
    finished = [t for t in data.trials if t.state.is_finished() and t.datetime_complete]
    if not starts or not finished:
        return _Section(title, "", note="No finished trial yet.")
    origin = min(starts)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, (label, colour, _) in _STATE_STYLE.items():
        times = sorted(
            (t.datetime_complete - origin).total_seconds()
            for t in finished
            if _state_key(t) == key
        )
        if not times and key == "INTERRUPTED":
            continue  # a rare state: no empty line in the legend
        xs = [0.0, *times]
        ax.step(xs, range(len(xs)), where="post", color=colour, label=f"{label} ({len(times)})")
    ax.set_xlabel("wall-clock time since study start (s)")
    ax.set_ylabel("cumulative trials (count)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Completed, pruned and failed trials over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    caption = (
        "Cumulative number of trials that ended in each state, against the seconds since the "
        "first trial started (Optuna's trial start and completion times; a resumed study "
        "includes the time between runs)."
    )
    return _Section(title, caption, image=_save(fig, out, "outcomes_over_time.png"))


def _fig_ensemble(data: _StudyData, out: Path) -> _Section:
    title = "Ensemble vs best single model"
    metrics = data.parent.data.metrics if data.parent is not None else {}
    present = [
        (name, label, hint)
        for name, label, hint in _ENSEMBLE_METRICS
        if f"test_{name}_ensemble" in metrics and f"test_{name}_best_single" in metrics
    ]
    if not present:
        return _Section(title, "", note="No ensemble test scores on the parent run (yet).")
    fig, axes = plt.subplots(
        1, len(present), figsize=(4.4 * len(present), 4.2), squeeze=False, layout="constrained"
    )
    for ax, (name, label, hint) in zip(axes[0], present, strict=True):
        values = [metrics[f"test_{name}_best_single"], metrics[f"test_{name}_ensemble"]]
        bars = ax.bar(["best single", "ensemble"], values, color=["tab:gray", "tab:purple"])
        ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], padding=2)
        ax.set_ylabel(label)
        ax.set_xlabel("model")
        ax.set_title(f"{label.split(' (')[0]} ({hint})")
        ax.set_ylim(0, max(values) * 1.18 or 1)
    fig.suptitle("Test split: ensemble vs best single trial")
    caption = (
        "Scores on the test split of the best single completed trial and of the ensemble "
        f"selected on the validation split{_ensemble_members(data)}. Reported once; the test "
        "split chose nothing."
    )
    return _Section(title, caption, image=_save(fig, out, "ensemble.png"))


def _ensemble_members(data: _StudyData) -> str:
    """' (greedy: trial 3 x0.50, ...)' from ensemble/summary.json, or '' if absent."""
    if data.parent is None:
        return ""
    try:
        # MLflow resolves a folder named like a logged model ("ensemble") through a client on
        # the *global* tracking URI; pinned to the study's, it cannot create ./mlflow.db.
        with (
            tempfile.TemporaryDirectory(prefix="searchsvc-report-") as tmp,
            _quiet_downloads(),
            _use_tracking_uri(data.client.tracking_uri),
        ):
            local = data.client.download_artifacts(
                data.parent.info.run_id, "ensemble/summary.json", tmp
            )
            summary = json.loads(Path(local).read_text())
        members = ", ".join(f"trial {m['trial']} x{m['weight']:.2f}" for m in summary["members"])
        return f" ({summary.get('method', '?')}: {members})"
    except Exception:  # the scores alone still make the figure
        return ""


# --------------------------------------------------------------------------- comparison studies


@dataclass
class _Group:
    label: str
    trials: list[FrozenTrial]


@dataclass(frozen=True)
class _Histogram:
    group: str
    trial: int
    epoch: int
    image: str


@dataclass
class _Comparison:
    params: list[str]
    groups: list[_Group]
    curves: _Section
    histograms: list[_Histogram]
    histogram_note: str | None
    table: list[dict[str, Any]]


def _groups(data: _StudyData, params: Sequence[str]) -> list[_Group]:
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in data.trials:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        label = ", ".join(f"{p}={_fmt(trial.params.get(p, '-'))}" for p in params)
        groups.setdefault(label, []).append(trial)
    return [_Group(label, trials) for label, trials in sorted(groups.items())]


def _group_mean(data: _StudyData, trials: Iterable[FrozenTrial], key: str) -> tuple[Any, Any]:
    """Per-epoch mean over the trials that reached that epoch (pruned ones stop early)."""
    by_epoch: dict[float, list[float]] = {}
    for trial in trials:
        series = data.series(trial.number, key)
        if series is None:
            continue
        for step, value in zip(*series, strict=True):
            if math.isfinite(value):
                by_epoch.setdefault(float(step), []).append(float(value))
    epochs = sorted(by_epoch)
    return np.array(epochs), np.array([np.mean(by_epoch[e]) for e in epochs])


def _fig_group_curves(data: _StudyData, groups: list[_Group], out: Path) -> _Section:
    title = "Per-group learning curves"
    keys = (("val_accuracy", "validation accuracy"), ("train_loss", "training loss"))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), layout="constrained")
    cmap = plt.cm.tab10 if len(groups) <= 10 else plt.cm.tab20
    legend: dict[str, Any] = {}  # one entry per group, whichever panel has its line
    for index, group in enumerate(groups):
        # Beyond the colour map's size, the line style tells groups apart.
        style = {"color": cmap(index % cmap.N), "linestyle": ("-", "--", ":")[index // cmap.N % 3]}
        for ax, (key, _) in zip(axes, keys, strict=True):
            epochs, means = _group_mean(data, group.trials, key)
            if len(epochs):
                (line,) = ax.plot(epochs, means, marker=".", label=group.label, **style)
                legend.setdefault(group.label, line)
    if not legend:
        plt.close(fig)
        return _Section(title, "", note="MLflow holds no per-epoch metrics for the groups.")
    for ax, (key, name) in zip(axes, keys, strict=True):
        ax.set_title(f"{name}, mean over each group's trials")
        ax.set_ylabel(_metric_label(key))
        _epoch_axis(ax)
    # Losses of groups that learn and groups that blow up differ by orders of magnitude.
    axes[1].set_yscale("log")
    axes[1].set_ylabel(f"{_metric_label('train_loss')}, log scale")
    fig.legend(
        list(legend.values()), list(legend), loc="outside lower center", ncol=min(3, len(legend))
    )
    fig.suptitle("Comparison: validation accuracy and training loss per group")
    caption = (
        "One line per group (completed and pruned trials; each epoch averages the trials "
        "that reached it)."
    )
    return _Section(title, caption, image=_save(fig, out, "group_curves.png"))


def _representative(data: _StudyData, group: _Group) -> FrozenTrial | None:
    """The group's best completed trial with a run, else its first trial with a run."""
    with_run = [t for t in group.trials if t.number in data.runs]
    complete = [t for t in with_run if t.state == TrialState.COMPLETE]
    if complete:
        pick = max if data.spec.primary.mode == "max" else min
        return pick(complete, key=_primary)
    return with_run[0] if with_run else None


def _group_histograms(data: _StudyData, groups: list[_Group], out: Path) -> list[_Histogram]:
    """Copy each group's representative activation histograms into the report folder."""
    found: list[_Histogram] = []
    for index, group in enumerate(groups):
        trial = _representative(data, group)
        if trial is None:
            continue
        run_id = data.runs[trial.number].info.run_id
        with tempfile.TemporaryDirectory(prefix="searchsvc-report-") as tmp:
            try:
                with _quiet_downloads():
                    local = Path(data.client.download_artifacts(run_id, "diagnostics", tmp))
            except Exception:  # no diagnostics for this trial: the grid shows the others
                logger.debug("no diagnostics artifacts for trial %d", trial.number)
                continue
            for path in sorted(local.iterdir()) if local.is_dir() else ():
                match = _HISTOGRAM.match(path.name)
                if not match:
                    continue
                epoch = int(match.group(1))
                name = f"activations_group{index:02d}_epoch_{epoch:03d}.png"
                shutil.copyfile(path, out / name)
                found.append(_Histogram(group.label, trial.number, epoch, name))
    return found


def _layer_table(data: _StudyData, groups: list[_Group]) -> list[dict[str, Any]]:
    """Per group: final validation accuracy and, per layer, the epoch-1 diagnostics (means)."""
    rows = []
    for group in groups:
        finals = []
        layers: dict[int, dict[str, list[float]]] = {}
        for trial in group.trials:
            series = data.series(trial.number, "val_accuracy")
            if series is not None and trial.state == TrialState.COMPLETE:
                finals.append(float(series[1][-1]))
            run = data.runs.get(trial.number)
            for key in run.data.metrics if run is not None else ():
                match = _LAYER_METRIC.match(key)
                first = data.series(trial.number, key) if match else None
                if match and first is not None:
                    kind, layer = match.group(1), int(match.group(2))
                    layers.setdefault(layer, {}).setdefault(kind, []).append(float(first[1][0]))
        rows.append(
            {
                "group": group.label,
                "trials": len(group.trials),
                "final_val_accuracy": float(np.mean(finals)) if finals else None,
                "layers": {
                    layer: {kind: float(np.mean(v)) for kind, v in stats.items()}
                    for layer, stats in sorted(layers.items())
                },
            }
        )
    return rows


def _comparison(data: _StudyData, params: list[str], out: Path) -> _Comparison | None:
    if not params:
        return None
    groups = _groups(data, params)
    if not groups:
        section = _Section("Per-group learning curves", "", note="No finished trial yet.")
        return _Comparison(params, [], section, [], "No finished trial yet.", [])
    histograms = _group_histograms(data, groups, out)
    note = None if histograms else "No trial of any group stored activation histograms."
    return _Comparison(
        params,
        groups,
        _fig_group_curves(data, groups, out),
        histograms,
        note,
        _layer_table(data, groups),
    )


# --------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0;
       color: #1d232b; background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 1.8em; } h2 { margin-top: 2em; border-bottom: 2px solid #e3e6ea;
     padding-bottom: 4px; }
.description { color: #4a5563; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d8dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { width: 9em; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; border: 1px solid #e3e6ea; }
figcaption { color: #4a5563; font-size: 0.92em; margin-top: 6px; }
.note { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 12px; }
h3 { margin: 1.4em 0 0.4em; font-size: 1.05em; }
.hist-row { display: flex; flex-wrap: wrap; gap: 16px; }
.hist-row figure { margin: 0; }
footer { margin-top: 40px; color: #4a5563; font-size: 0.9em; border-top: 1px solid #e3e6ea;
         padding-top: 10px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(_fmt(c))}</td>' if i in numeric else f"<td>{_e(_fmt(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _options(model: Any) -> str:
    fields = {k: v for k, v in model.model_dump(mode="json").items() if k != "name"}
    return f"{model.name} ({_params_text(fields)})" if fields else model.name


def _html_header(spec: StudySpec) -> str:
    objective = ", ".join(f"{o.mode} {o.metric}" for o in spec.objectives)
    dataset = spec.dataset.name + (
        f" (val_size={spec.dataset.val_size})" if spec.dataset.val_size is not None else ""
    )
    rows = [
        ("trainer", spec.trainer),
        ("dataset", dataset),
        ("objective", objective + " (on the validation split)"),
        ("sampler", _options(spec.sampler)),
        ("scheduler", _options(spec.scheduler)),
        ("budget", f"{spec.budget.n_trials} trials, at most {spec.budget.max_epochs} epochs"),
    ]
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    description = spec.description or "(no description)"
    return (
        f"<h1>Study report: {_e(spec.name)}</h1>"
        f'<p class="description">{_e(description)}</p>'
        f'<table class="meta">{meta}</table>'
    )


def _html_summary(data: _StudyData) -> str:
    counts: dict[str, int] = {}
    for trial in data.trials:
        counts[_state_key(trial)] = counts.get(_state_key(trial), 0) + 1
    best = top_trials(data.study, data.spec, 1) if data.study is not None else []
    rows = [
        ("trials", len(data.trials)),
        ("complete", counts.get("COMPLETE", 0)),
        ("pruned", counts.get("PRUNED", 0)),
        ("failed", counts.get("FAIL", 0)),
    ]
    rows += [(k.lower(), counts[k]) for k in ("INTERRUPTED", "RUNNING", "WAITING") if k in counts]
    diagnoses: dict[str, int] = {}
    for trial in data.trials:
        label = trial.user_attrs.get("diagnosis")
        if label and _state_key(trial) != "INTERRUPTED":
            diagnoses[label] = diagnoses.get(label, 0) + 1
    if diagnoses:
        # The recipe: first "good on the training data?", then "good on validation data?".
        shown = ", ".join(f"{k} {v}" for k, v in sorted(diagnoses.items()))
        rows.append(("diagnosis (recipe)", shown))
    if best:
        values = " / ".join(_fmt(v) for v in best[0].values)
        rows += [
            ("best trial", best[0].number),
            (f"best value ({', '.join(o.metric for o in data.spec.objectives)})", values),
            ("best params", _params_text(best[0].params)),
        ]
    else:
        rows.append(("best trial", "none completed yet"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows)
    return f'<h2>Summary</h2><table class="meta">{body}</table>'


def _diagnosis(trial: FrozenTrial) -> str:
    """The recipe's label with the figures behind it, e.g. ``overfit (val_loss_rise=0.23)``."""
    label = trial.user_attrs.get("diagnosis")
    if not label:
        return "-"
    evidence = trial.user_attrs.get("diagnosis_evidence") or {}
    figures = ", ".join(f"{k}={_fmt(v)}" for k, v in evidence.items())
    return f"{label} ({figures})" if figures else label


def _html_top(data: _StudyData) -> str:
    best = top_trials(data.study, data.spec, N_TOP) if data.study is not None else []
    rows = []
    for trial in best:
        epochs = trial.user_attrs.get("epochs", "")
        value = " / ".join(_fmt(v) for v in trial.values)
        params = _params_text(trial.params)
        rows.append((trial.number, value, "COMPLETE", epochs, _diagnosis(trial), params))
    # Fewer than N_TOP completed: fill with the pruned ones at their last report, marked so.
    pruned = [(t, _last_intermediate(t)) for t in data.with_state(TrialState.PRUNED)]
    pruned = [(t, last) for t, last in pruned if last is not None]
    pruned.sort(key=lambda p: p[1][1], reverse=data.spec.primary.mode == "max")
    for trial, (step, value) in pruned[: N_TOP - len(rows)]:
        epochs = trial.user_attrs.get("epochs", step)
        text = f"{_fmt(value)} (last report, epoch {step})"
        rows.append(
            (trial.number, text, "PRUNED", epochs, _diagnosis(trial), _params_text(trial.params))
        )
    if not rows:
        return "<h2>Top trials</h2><p>No trial has a value yet.</p>"
    objectives = " / ".join(o.metric for o in data.spec.objectives)
    table = _table(
        ["trial", f"value ({objectives})", "state", "epochs", "diagnosis", "params"],
        rows,
        numeric={0, 1, 3},
    )
    return f"<h2>Top {len(rows)} trials</h2>{table}"


def _html_section(section: _Section) -> str:
    if section.image is None:
        return f'<h2>{_e(section.title)}</h2><p class="note">{_e(section.note)}</p>'
    return (
        f"<h2>{_e(section.title)}</h2><figure>"
        f'<img src="{_e(section.image)}" alt="{_e(section.title)}">'
        f"<figcaption>{_e(section.caption)}</figcaption></figure>"
    )


def _html_comparison(comparison: _Comparison) -> str:
    parts = [
        "<h2>Comparison of groups</h2>",
        f"<p>Groups by {_e(', '.join(comparison.params))}: {len(comparison.groups)} groups.</p>",
        _html_section(comparison.curves),
        "<h2>Activation histograms per group</h2>",
    ]
    if comparison.histograms:
        # Natural size, wrapped: narrow PNGs sit side by side, wide ones stay readable.
        parts.append(
            "<p>Per-layer activation histograms of each group's best trial (on a fixed "
            "validation batch), at the first and the last epoch.</p>"
        )
        by_group: dict[str, list[_Histogram]] = {}
        for histogram in comparison.histograms:
            by_group.setdefault(histogram.group, []).append(histogram)
        for group, histograms in by_group.items():
            figures = "".join(
                f'<figure><img src="{_e(h.image)}" alt="{_e(h.group)}, epoch {h.epoch}">'
                f"<figcaption>{_e(h.group)}: trial {h.trial}, epoch {h.epoch}</figcaption>"
                "</figure>"
                for h in histograms
            )
            parts.append(
                f"<h3>{_e(group)} (trial {histograms[0].trial})</h3>"
                f'<div class="hist-row">{figures}</div>'
            )
    else:
        parts.append(f'<p class="note">{_e(comparison.histogram_note)}</p>')
    parts.append(_html_layer_table(comparison.table))
    return "".join(parts)


def _html_layer_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "group",
        "trials",
        "final validation accuracy (fraction, mean of completed)",
        "layer",
        "act std (activation units, epoch 1)",
        "saturated (fraction, epoch 1)",
        "dead (fraction, epoch 1)",
    ]
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    body = []
    for row in rows:
        layers = row["layers"] or {"-": {}}
        span = len(layers)
        for index, (layer, stats) in enumerate(layers.items()):
            cells = ""
            if index == 0:
                final = row["final_val_accuracy"]
                cells = (
                    f'<td rowspan="{span}">{_e(row["group"])}</td>'
                    f'<td rowspan="{span}" class="num">{row["trials"]}</td>'
                    f'<td rowspan="{span}" class="num">'
                    f"{_e(_fmt(final) if final is not None else '-')}</td>"
                )
            stat = [
                _e(_fmt(stats[k])) if k in stats else "-" for k in ("act_std", "saturated", "dead")
            ]
            body.append(
                f"<tr>{cells}<td>{_e(layer)}</td>"
                + "".join(f'<td class="num">{s}</td>' for s in stat)
                + "</tr>"
            )
    return (
        "<h2>Per-group layer diagnostics</h2><table><thead>"
        f"{head}</thead><tbody>{''.join(body)}</tbody></table>"
        "<p>Epoch-1 values are means over the group's trials; '-' means the trainer does not "
        "report that statistic for the group's activation (saturation: sigmoid/tanh; dead "
        "units: ReLU family and maxout).</p>"
    )


def _html_page(data: _StudyData, body: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parent = data.parent.info.run_id if data.parent is not None else "none"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(data.spec.name)}: study report</title><style>{_CSS}</style></head>"
        f"<body><main>{_html_header(data.spec)}{body}<footer>"
        "Every choice (pruning, the best trial, ensemble members) was made on the validation "
        "split; the test split only reports and never chose anything. "
        f"Generated {_e(when)}; MLflow parent run {_e(parent)}.</footer></main></body></html>\n"
    )


# --------------------------------------------------------------------------- building


def _build(data: _StudyData, out: Path, group_params: list[str]) -> None:
    if not data.trials:
        body = (
            '<h2>Summary</h2><p class="note">This study has no trials yet: run it with '
            "<code>searchsvc run</code> first.</p>"
        )
        (out / "index.html").write_text(_html_page(data, body), encoding="utf-8")
        return
    sections = [
        _fig_history(data, out),
        _fig_importance(data, out),
        _fig_parallel(data, out),
        _fig_learning_curves(data, out),
        _fig_outcomes_over_time(data, out),
        _fig_ensemble(data, out),
    ]
    comparison = _comparison(data, group_params, out)
    body = _html_summary(data) + _html_top(data) + "".join(_html_section(s) for s in sections)
    if comparison is not None:
        body += _html_comparison(comparison)
    (out / "index.html").write_text(_html_page(data, body), encoding="utf-8")


def _swap_in(build: Path, final: Path) -> None:
    """Replace ``final`` by ``build``; the old report stays whole until the new one is in."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old{build.name}")
        final.rename(old)
    try:
        build.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)  # put the previous report back rather than leave none
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _log_to_parent(data: _StudyData, folder: Path) -> None:
    if data.parent is None:
        logger.warning("no MLflow parent run for study %r: report not logged", data.spec.name)
        return
    try:
        data.client.log_artifacts(data.parent.info.run_id, str(folder), REPORT_DIR)
    except Exception as exc:
        raise TrackingError(
            f"report written to {folder}, but MLflow refused it as artifacts of run "
            f"{data.parent.info.run_id}: {exc}"
        ) from exc
    logger.info("report logged to MLflow run %s under %s/", data.parent.info.run_id, REPORT_DIR)
