"""The comparison section of the study report: the only place that forms and compares groups.

A comparison study (``group_by``, or a grid sampler's categorical params) groups its finished
trials by the values of some params; here the groups are formed, their mean learning curves
drawn, each group's representative activation histograms copied from MLflow into the report
folder, and the per-layer table (final validation accuracy, epoch-1 diagnostics) computed.
``build_comparison`` returns all of it as one ``Comparison`` for the page to render.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from optuna.trial import FrozenTrial, TrialState

from searchsvc.report import figures
from searchsvc.report.data import StudyData, fmt, metric_label, primary_value, quiet_downloads

matplotlib.use("Agg")  # a service has no display; must come before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["Comparison", "Group", "Histogram", "build_comparison"]

logger = logging.getLogger(__name__)

_LAYER_METRIC = re.compile(r"^(act_std|saturated|dead)_(\d+)$")
_HISTOGRAM = re.compile(r"^activations_epoch_(\d+)\.png$")


@dataclass
class Group:
    label: str
    trials: list[FrozenTrial]


@dataclass(frozen=True)
class Histogram:
    group: str
    trial: int
    epoch: int
    image: str


@dataclass
class Comparison:
    params: list[str]
    groups: list[Group]
    curves: figures.Section
    histograms: list[Histogram]
    histogram_note: str | None
    table: list[dict[str, Any]]


def _groups(data: StudyData, params: Sequence[str]) -> list[Group]:
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in data.trials:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        label = ", ".join(f"{p}={fmt(trial.params.get(p, '-'))}" for p in params)
        groups.setdefault(label, []).append(trial)
    return [Group(label, trials) for label, trials in sorted(groups.items())]


def _group_mean(data: StudyData, trials: Iterable[FrozenTrial], key: str) -> tuple[Any, Any]:
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


def _fig_group_curves(data: StudyData, groups: list[Group], out: Path) -> figures.Section:
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
        return figures.Section(title, "", note="MLflow holds no per-epoch metrics for the groups.")
    for ax, (key, name) in zip(axes, keys, strict=True):
        ax.set_title(f"{name}, mean over each group's trials")
        ax.set_ylabel(metric_label(key))
        figures.epoch_axis(ax)
    # Losses of groups that learn and groups that blow up differ by orders of magnitude.
    axes[1].set_yscale("log")
    axes[1].set_ylabel(f"{metric_label('train_loss')}, log scale")
    fig.legend(
        list(legend.values()), list(legend), loc="outside lower center", ncol=min(3, len(legend))
    )
    fig.suptitle("Comparison: validation accuracy and training loss per group")
    caption = (
        "One line per group (completed and pruned trials; each epoch averages the trials "
        "that reached it)."
    )
    return figures.Section(title, caption, image=figures.save(fig, out, "group_curves.png"))


def _representative(data: StudyData, group: Group) -> FrozenTrial | None:
    """The group's best completed trial with a run, else its first trial with a run."""
    with_run = [t for t in group.trials if t.number in data.runs]
    complete = [t for t in with_run if t.state == TrialState.COMPLETE]
    if complete:
        pick = max if data.spec.primary.maximize else min
        return pick(complete, key=primary_value)
    return with_run[0] if with_run else None


def _group_histograms(data: StudyData, groups: list[Group], out: Path) -> list[Histogram]:
    """Copy each group's representative activation histograms into the report folder."""
    found: list[Histogram] = []
    for index, group in enumerate(groups):
        trial = _representative(data, group)
        if trial is None:
            continue
        run_id = data.runs[trial.number].info.run_id
        with tempfile.TemporaryDirectory(prefix="searchsvc-report-") as tmp:
            try:
                with quiet_downloads():
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
                found.append(Histogram(group.label, trial.number, epoch, name))
    return found


def _layer_table(data: StudyData, groups: list[Group]) -> list[dict[str, Any]]:
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


def build_comparison(data: StudyData, params: list[str], out: Path) -> Comparison | None:
    if not params:
        return None
    groups = _groups(data, params)
    if not groups:
        section = figures.Section("Per-group learning curves", "", note="No finished trial yet.")
        return Comparison(params, [], section, [], "No finished trial yet.", [])
    histograms = _group_histograms(data, groups, out)
    note = None if histograms else "No trial of any group stored activation histograms."
    return Comparison(
        params,
        groups,
        _fig_group_curves(data, groups, out),
        histograms,
        note,
        _layer_table(data, groups),
    )
