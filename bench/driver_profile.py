"""Where the driver's time went, from a cProfile of ``searchsvc.api.run`` (``bench/driver_scale.py
--profile``): cumulative time and calls of the entry points that do each kind of work.

The rows overlap where one entry point calls another (Tune's step holds the searcher and the
callbacks); each row says what it holds. Under the profiler Python-heavy code runs slower than
without it, so the shares, not the seconds, are what carry over to an unprofiled run.
"""

from __future__ import annotations

import pstats

__all__ = ["print_profile"]

# (label, file suffix, function name): one row each, in this order.
ROWS = [
    ("the whole run (searchsvc.api.run)", "searchsvc/api.py", "run"),
    ("  Tune's loop (Tuner.fit)", "ray/tune/tuner.py", "fit"),
    ("    ask + sample (searcher.suggest)", "searchsvc/search/searcher.py", "suggest"),
    ("      Study.ask", "optuna/study/study.py", "ask"),
    ("      TPE search space (infer_relative_search_space)", "optuna/samplers/_tpe/sampler.py",
     "infer_relative_search_space"),
    ("      TPE sample_relative", "optuna/samplers/_tpe/sampler.py", "sample_relative"),
    ("    epoch values to Optuna (searcher.on_trial_result)", "searchsvc/search/searcher.py",
     "on_trial_result"),
    ("    checkpoint path to Optuna (searcher.note_checkpoint)",
     "searchsvc/search/searcher.py", "note_checkpoint"),
    ("    attrs + tell (searcher.on_trial_complete)", "searchsvc/search/searcher.py",
     "on_trial_complete"),
    ("    MLflow: trial run created (on_trial_start)", "searchsvc/execution/callbacks.py",
     "on_trial_start"),
    ("    MLflow: epoch metrics (on_trial_result)", "searchsvc/execution/callbacks.py",
     "on_trial_result"),
    ("    MLflow: checkpoint files (on_checkpoint)", "searchsvc/execution/callbacks.py",
     "on_checkpoint"),
    ("    MLflow: trial run ended (_finish)", "searchsvc/execution/callbacks.py", "_finish"),
    ("    progress: per epoch", "searchsvc/execution/progress.py", "on_trial_result"),
    ("    progress: per step", "searchsvc/execution/progress.py", "on_step_end"),
    ("    Tune experiment snapshot (save_to_dir)", "ray/tune/execution/tune_controller.py",
     "save_to_dir"),
    ("    ray.wait", "ray/_private/worker.py", "wait"),
    ("  the search's start (StudyRun.open_search)", "searchsvc/study_run.py", "open_search"),
    ("  MLflow's start (StudyRun.open_tracking)", "searchsvc/study_run.py", "open_tracking"),
    ("  summary + report (write_report)", "searchsvc/report/build.py", "write_report"),
]  # fmt: skip

# Every SQLAlchemy statement, whoever made it (Optuna's and MLflow's embedded stores alike).
SQL = ("sqlalchemy/engine/base.py", "_execute_context")


def _find(stats: pstats.Stats, suffix: str, name: str) -> tuple[int, float]:
    calls, cumulative = 0, 0.0
    for (filename, _line, function), (_cc, nc, _tt, ct, _callers) in stats.stats.items():
        if function == name and filename.endswith(suffix):
            calls += nc
            cumulative += ct
    return calls, cumulative


def print_profile(path: str, *, n_trials: int) -> None:
    """Print each row's cumulative seconds, its share of the whole, its calls per trial."""
    stats = pstats.Stats(path)
    _, whole = _find(stats, *ROWS[0][1:])
    print(f"profile (cProfile, main thread; {n_trials} trials): seconds | share | calls per trial")
    for label, suffix, name in ROWS:
        calls, cumulative = _find(stats, suffix, name)
        share = cumulative / whole if whole else 0.0
        print(f"{label}: {cumulative:.1f} s | {share:.1%} | {calls / n_trials:.1f}")
    calls, cumulative = _find(stats, *SQL)
    print(f"all SQL statements (both stores): {cumulative:.1f} s | {cumulative / whole:.1%} | "
          f"{calls / n_trials:.1f}")  # fmt: skip
