"""The report's Pareto-front figure, for a study of two or three objectives.

Drawn by Optuna's own ``plot_pareto_front`` (its matplotlib variant, as every figure of the
report is matplotlib): every completed trial at its objective values, the Pareto trials (those
no other completed trial beats on every objective) picked out.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from searchsvc.report.data import StudyData, metric_label
from searchsvc.report.figures import Section, save
from searchsvc.search.storage import top_trials

__all__ = ["fig_pareto"]

logger = logging.getLogger(__name__)


def fig_pareto(data: StudyData, out: Path) -> Section | None:
    """The Pareto-front section; None for a single-objective study (it has no front)."""
    objectives = data.spec.objectives
    if len(objectives) < 2:
        return None
    title = "Pareto front"
    if data.study is None or not data.with_state(TrialState.COMPLETE):
        return Section(title, "", note="No trial has completed yet.")
    if len(objectives) > 3:
        return Section(title, "", note="Optuna draws a Pareto front of 2 or 3 objectives only.")
    names = [f"{metric_label(o.metric)}, {o.mode}" for o in objectives]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            ax = optuna.visualization.matplotlib.plot_pareto_front(data.study, target_names=names)
    except Exception as exc:
        logger.info("Pareto front skipped: %s", exc)
        return Section(title, "", note=f"Optuna could not draw the Pareto front: {exc}")
    fig = ax.figure
    fig.set_size_inches(8, 5.5)
    handles, labels = ax.get_legend_handles_labels()
    ours = {"Trial": "dominated trial", "Best Trial": "Pareto trial"}  # Optuna's labels
    ax.legend(handles, [ours.get(label, label) for label in labels], loc="best")
    front = top_trials(data.study, data.spec, None)
    ax.set_title(f"Pareto front: {len(front)} of {len(data.with_state(TrialState.COMPLETE))} "
                 "completed trials")  # fmt: skip
    shown = ", ".join(str(t.number) for t in front)
    caption = (
        f"Every completed trial at its objective values ({', '.join(names)}); the Pareto "
        "trials, which no other completed trial matches or beats on every objective, are "
        f"marked as the best trials (here trials {shown}, by {objectives[0].metric})."
    )
    return Section(title, caption, image=save(fig, out, "pareto.png"))
