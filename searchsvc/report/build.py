"""The visual report of a study, one self-contained HTML page beside it: the only entry point.

``write_report`` reads the Optuna study (trial states, values, times) and the MLflow runs
(per-epoch metric histories, activation histograms, the parent run's ensemble scores), writes
``<workdir>/report/index.html`` plus PNG figures into a temporary folder that is swapped in
whole at the end, then attaches the folder to the study's parent run under ``report/`` so the
MLflow UI shows it too; reading lives in ``data``, figures in ``figures`` and ``comparison``,
the markup in ``page``, and this module is the only place that puts them together.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from searchsvc.errors import TrackingError
from searchsvc.report import figures
from searchsvc.report.comparison import build_comparison
from searchsvc.report.data import StudyData, group_params
from searchsvc.report.page import html_comparison, html_page, html_section, html_summary, html_top
from searchsvc.report.pareto import fig_pareto
from searchsvc.study_run import StudyRun

__all__ = ["REPORT_DIR", "write_report"]

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
"""Folder name of the report, both in the study's workdir and in the parent run's artifacts."""


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
    params = group_params(spec, group_by)
    paths.workdir.mkdir(parents=True, exist_ok=True)  # the default stores live in it
    data = StudyData.load(run)
    final = paths.workdir / REPORT_DIR
    build = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}-", dir=paths.workdir))
    build.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
    try:
        _build(data, build, params)
        _swap_in(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    logger.info("report written to %s", final / "index.html")
    if log_to_mlflow:
        if run.tracker is not None and run.tracker.parent_run_id:
            # The tracker's one write path: journaled in an outage, counted if refused.
            run.tracker.log_files(run.tracker.parent_run_id, final, REPORT_DIR)
        else:
            _log_to_parent(data, final)
    return final / "index.html"


def _build(data: StudyData, out: Path, params: list[str]) -> None:
    if not data.trials:
        body = (
            '<h2>Summary</h2><p class="note">This study has no trials yet: run it with '
            "<code>searchsvc run</code> first.</p>"
        )
        (out / "index.html").write_text(html_page(data, body), encoding="utf-8")
        return
    pareto = fig_pareto(data, out)  # several objectives only, first: no one trial is best
    sections = [
        *([pareto] if pareto is not None else []),
        figures.fig_history(data, out),
        figures.fig_importance(data, out),
        figures.fig_parallel(data, out),
        figures.fig_learning_curves(data, out),
        figures.fig_outcomes_over_time(data, out),
        figures.fig_ensemble(data, out),
    ]
    comparison = build_comparison(data, params, out)
    body = html_summary(data) + html_top(data) + "".join(html_section(s) for s in sections)
    if comparison is not None:
        body += html_comparison(comparison)
    (out / "index.html").write_text(html_page(data, body), encoding="utf-8")


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


def _log_to_parent(data: StudyData, folder: Path) -> None:
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
