"""Per-trial overhead of the whole stack: sampler, Ray, MLflow logging, Optuna storage.

Runs studies of the no-op trainer (it trains nothing and reports 3 epochs at once) through
``run_study`` exactly as ``searchsvc run`` does, with embedded SQLite stores in a temp folder.
The per-trial overhead is the slope between a short and a long study, so fixed costs (Ray
start-up, data loading, MLflow schema creation) are not spread over the trials:

    overhead = (T(n_long) - T(n_short)) / (n_long - n_short)

It then checks that every trial of the long study is accounted for in Optuna storage and in
MLflow (one child run per trial).

Usage: python bench/overhead.py [--trials 50] [--short 10] [--concurrency 2] [--cpus 1]
Load check: python bench/overhead.py --trials 200 --concurrency 8 --cpus 0.25
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from rich.console import Console

from searchsvc.execution.runner import run_study
from searchsvc.study.loader import load_study

TARGET_S = 0.25


def _study_file(folder: Path, n_trials: int, concurrency: int, cpus: float) -> Path:
    spec = {
        "name": f"overhead-{n_trials}",
        "trainer": "noop",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
            "x1": {"type": "float", "low": -1.0, "high": 1.0},
        },
        "sampler": "tpe",
        "scheduler": "asha",
        "budget": {"n_trials": n_trials, "max_epochs": 3, "max_concurrent_trials": concurrency},
        "resources": {"cpus": cpus},
        "workdir": str(folder / f"work-{n_trials}"),
        "ensemble": {"enabled": False},
    }
    path = folder / f"overhead-{n_trials}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _timed_run(folder: Path, n_trials: int, concurrency: int, cpus: float):
    study = load_study(_study_file(folder, n_trials, concurrency, cpus))
    started = time.perf_counter()
    result = run_study(study, console=Console(quiet=True), build_ensemble=False,
                       build_report=False)  # fmt: skip
    return time.perf_counter() - started, result


def _accounted(result) -> str:
    """Trials in Optuna storage and child runs in MLflow, by state."""
    import optuna
    from mlflow.tracking import MlflowClient

    study = optuna.load_study(study_name=result.name, storage=result.paths.storage_url)
    states = Counter(t.state.name for t in study.trials)
    client = MlflowClient(result.paths.tracking_uri)
    experiment = client.get_experiment_by_name(result.name)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
        max_results=5000,
    )
    run_states = Counter(r.data.tags.get("searchsvc.state") for r in runs)
    return f"Optuna {dict(states)}; MLflow child runs {len(runs)} {dict(run_states)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-") as tmp:
        folder = Path(tmp)
        short_s, short = _timed_run(folder, args.short, args.concurrency, args.cpus)
        long_s, long = _timed_run(folder, args.trials, args.concurrency, args.cpus)
        accounted = _accounted(long)
    short_n, long_n = short.finished, long.finished
    per_trial = (long_s - short_s) / (long_n - short_n)
    print(
        f"{short_n} trials: {short_s:.1f} s; {long_n} trials: {long_s:.1f} s"
        " (wall clock, Ray start-up included)"
    )
    print(f"whole-run time per trial ({long_n} trials): {long_s / long_n:.3f} s")
    print(
        f"per-trial overhead (slope): {per_trial:.3f} s  (target <= {TARGET_S} s) "
        f"{'OK' if per_trial <= TARGET_S else 'OVER TARGET'}"
    )
    print(f"accounted for ({long_n} trials): {accounted}")


if __name__ == "__main__":
    main()
