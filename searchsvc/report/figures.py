"""The study report's main figures, and the only place a report figure becomes a PNG.

Optimisation history, parameter importances, parallel coordinates, learning curves of the
best trials, trial outcomes over wall-clock time and ensemble vs best single model: each is a
``fig_*`` function that draws into the report folder and returns a ``Section``. ``save`` (the
resolution, closing the figure) and ``epoch_axis`` are also what the comparison figures use.
A figure that cannot be drawn (too few trials, no such metric) becomes a ``Section`` with a
note instead of an error: a report is most needed when a study went wrong.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from optuna.trial import FrozenTrial, TrialState

from searchsvc.report.data import (
    StudyData,
    last_intermediate,
    metric_label,
    primary_value,
    quiet_downloads,
    state_key,
)
from searchsvc.search.storage import top_trials
from searchsvc.study.spec import CategoricalParam, IntParam, StudySpec

matplotlib.use("Agg")  # a service has no display; must come before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

__all__ = [
    "Section",
    "epoch_axis",
    "fig_ensemble",
    "fig_history",
    "fig_importance",
    "fig_learning_curves",
    "fig_outcomes_over_time",
    "fig_parallel",
    "save",
]

logger = logging.getLogger(__name__)

DPI = 110
N_CURVES = 5  # learning curves of this many best trials: more lines are unreadable
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


def save(fig: Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def epoch_axis(ax: Any) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5"
    ax.grid(alpha=0.3)


@dataclass(frozen=True)
class Section:
    """One figure of the page, or the note that says why it is missing."""

    title: str
    caption: str
    image: str | None = None
    note: str | None = None


def fig_history(data: StudyData, out: Path) -> Section:
    title = "Optimisation history"
    primary = data.spec.primary
    complete = data.with_state(TrialState.COMPLETE)
    pruned = [(t, last_intermediate(t)) for t in data.with_state(TrialState.PRUNED)]
    pruned = [(t, last) for t, last in pruned if last is not None]
    if not complete and not pruned:
        return Section(title, "", note="No trial has reported a value yet.")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if complete:
        xs = np.array([t.number for t in complete])
        ys = np.array([primary_value(t) for t in complete])
        label, colour, marker = _STATE_STYLE["COMPLETE"]
        ax.scatter(xs, ys, c=colour, marker=marker, s=28, label=f"{label} (final value)")
        best = np.maximum.accumulate(ys) if primary.maximize else np.minimum.accumulate(ys)
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
    ax.set_ylabel(metric_label(primary.metric))
    ax.set_title(f"Optimisation history: {primary.mode} {primary.metric}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    caption = (
        f"Objective ({primary.metric}, {primary.mode}) of every trial against its number: "
        "completed trials at their final value (that of their best epoch), pruned ones at the "
        "last epoch they reported; the line is the best completed value so far."
    )
    return Section(title, caption, image=save(fig, out, "history.png"))


def _importance_target(spec: StudySpec) -> Callable[[FrozenTrial], float] | None:
    # Multi-objective studies need an explicit target; the primary objective is what we rank by.
    return primary_value if len(spec.objectives) > 1 else None


def fig_importance(data: StudyData, out: Path) -> Section:
    title = "Parameter importances"
    if data.study is None or len(data.with_state(TrialState.COMPLETE)) < 2:
        return Section(title, "", note="Needs at least 2 completed trials.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental / few-trials warnings: noise here
            importances = optuna.importance.get_param_importances(
                data.study, target=_importance_target(data.spec)
            )
    except Exception as exc:  # too few distinct values, one param only ...: say so, go on
        logger.info("parameter importances skipped: %s", exc)
        return Section(title, "", note=f"Optuna could not compute importances: {exc}")
    if not importances:
        return Section(title, "", note="No parameter varied across the completed trials.")
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
    return Section(title, caption, image=save(fig, out, "importances.png"))


def _param_axis_label(spec: StudySpec, name: str) -> str:
    """A parameter axis label: the name and its scale (hyperparameters carry no units)."""
    param = spec.search_space.get(name)
    if isinstance(param, CategoricalParam):
        return f"{name} (choice)"
    scale = ["integer"] if isinstance(param, IntParam) else []
    scale += ["log scale"] if getattr(param, "log", False) else []
    return f"{name} ({', '.join(scale)})" if scale else name


def fig_parallel(data: StudyData, out: Path) -> Section:
    title = "Parallel coordinates"
    if data.study is None or len(data.with_state(TrialState.COMPLETE)) < 2:
        return Section(title, "", note="Needs at least 2 completed trials.")
    objective = metric_label(data.spec.primary.metric)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(
                data.study, target=_importance_target(data.spec), target_name=objective
            )
    except Exception as exc:
        logger.info("parallel coordinates skipped: %s", exc)
        return Section(title, "", note=f"Optuna could not draw parallel coordinates: {exc}")
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
    return Section(title, caption, image=save(fig, out, "parallel.png"))


_CURVES = (
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    ("val_accuracy", "validation accuracy"),
)


def fig_learning_curves(data: StudyData, out: Path) -> Section:
    title = f"Learning curves of the top {N_CURVES} trials"
    best = top_trials(data.study, data.spec, N_CURVES) if data.study is not None else []
    if not best:
        return Section(title, "", note="No completed trial yet.")
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
        return Section(title, "", note="MLflow holds no per-epoch metrics for these trials.")
    for ax, (key, name) in zip(axes, _CURVES, strict=True):
        ax.set_title(name)
        ax.set_ylabel(metric_label(key))
        epoch_axis(ax)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.suptitle(f"Learning curves of the {len(best)} best completed trials")
    caption = (
        "Per-epoch training loss, validation loss and validation accuracy of the best "
        f"completed trials by {data.spec.primary.metric}, from the MLflow metric histories."
    )
    return Section(title, caption, image=save(fig, out, "learning_curves.png"))


def fig_outcomes_over_time(data: StudyData, out: Path) -> Section:
    title = "Trial outcomes over time"
    starts = [t.datetime_start for t in data.trials if t.datetime_start is not None]
    finished = [t for t in data.trials if t.state.is_finished() and t.datetime_complete]
    if not starts or not finished:
        return Section(title, "", note="No finished trial yet.")
    origin = min(starts)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, (label, colour, _) in _STATE_STYLE.items():
        times = sorted(
            (t.datetime_complete - origin).total_seconds() for t in finished if state_key(t) == key
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
    return Section(title, caption, image=save(fig, out, "outcomes_over_time.png"))


def fig_ensemble(data: StudyData, out: Path) -> Section:
    title = "Ensemble vs best single model"
    metrics = data.parent.data.metrics if data.parent is not None else {}
    present = [
        (name, label, hint)
        for name, label, hint in _ENSEMBLE_METRICS
        if f"test_{name}_ensemble" in metrics and f"test_{name}_best_single" in metrics
    ]
    if not present:
        return Section(title, "", note="No ensemble test scores on the parent run (yet).")
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
    return Section(title, caption, image=save(fig, out, "ensemble.png"))


def _ensemble_members(data: StudyData) -> str:
    """' (greedy: trial 3 x0.50, ...)' from ensemble/summary.json, or '' if absent."""
    if data.parent is None:
        return ""
    try:
        # MLflow resolves a folder named like a logged model ("ensemble") through a client on
        # the *global* tracking URI; pinned to the study's, it cannot create ./mlflow.db.
        with (
            tempfile.TemporaryDirectory(prefix="searchsvc-report-") as tmp,
            quiet_downloads(),
            _use_tracking_uri(data.client.tracking_uri),
        ):
            local = data.client.download_artifacts(
                data.parent.info.run_id, "ensemble/summary.json", tmp
            )
            summary = json.loads(Path(local).read_text())
        members = ", ".join(
            f"trial {m['trial']}" + (f"-reseed-{m['reseed']}" if m.get("reseed") else "")
            + f" x{m['weight']:.2f}" for m in summary["members"]
        )  # fmt: skip
        refit = "; members and best single refit on training + validation" * bool(
            summary.get("refit")
        )
        return f" ({summary.get('method', '?')}: {members}{refit})"
    except Exception:  # the scores alone still make the figure
        return ""
