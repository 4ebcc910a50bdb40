"""Per-trial overhead of the whole stack (sampler, Ray, MLflow logging, Optuna storage), and
the time from the command to the first trial running.

Every study is a fresh ``searchsvc run --json --no-ensemble`` process with fresh embedded
SQLite stores, so no study pays another's imports or Ray start-up. For each setting it runs a
short and a long study ``--repeats`` times (3 by default) and takes the medians; the per-trial
overhead is the slope between them, so the fixed costs (imports, Ray start-up, store schema
creation, data loading) are not spread over the trials:

    overhead = (median T(n_long) - median T(n_short)) / (n_long - n_short)

Two trainers:

- ``noop``: trains nothing and has no weights (pure service overhead);
- ``tiny``: the real ``mlp`` trainer on a 20-8-10 network, 1,280 synthetic training samples,
  2 epochs, diagnostics off, whose weights are uploaded to MLflow each trial as in any real
  study. Its own training time (measured here in-process, one thread, warm) is inside the
  slope; the overhead printed is the slope less that time divided by the trials that can
  train at once (``min(concurrency, cores)``); the raw slope is printed beside it.

"first trial running" is the time from starting the command to the first trial's start in
Optuna storage (``datetime_start``): imports, validation, Ray start-up, the stores.

It checks that every trial of each long study is accounted for in Optuna storage and MLflow
(one child run per trial, same states).

Usage: python bench/overhead.py [--repeats 3] [--short 10] [--long 60]
       [--trainers noop tiny] [--concurrency 2 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGETS_S = {2: 0.15, 8: 0.25}  # per-trial overhead with model logging (issue targets)
# The tiny trainer: per-layer diagnostics (histogram PNGs) are a trainer's own work, off here.
TINY_PARAMS = {"n_layers": 1, "width_1": 8, "batch_size": 256, "optimizer": "adam",
               "diagnostics": False}  # fmt: skip
CORES = 2


@dataclass
class Run:
    """One fresh ``searchsvc run`` process."""

    wall_s: float
    first_trial_s: float
    finished: int
    accounted: str


def study_spec(name: str, trainer: str, n_trials: int, concurrency: int, workdir: Path) -> dict:
    """The benchmark's study: 2 searched params, TPE + ASHA, MLflow on, nothing switched off."""
    space: dict[str, Any] = {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}
    if trainer == "noop":
        space["x1"] = {"type": "float", "low": -1.0, "high": 1.0}
        max_epochs = 3
    else:
        space["weight_decay"] = {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}
        space.update(TINY_PARAMS)
        max_epochs = 2
    return {
        "name": name,
        "trainer": "noop" if trainer == "noop" else "mlp",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": space,
        "sampler": "tpe",
        "scheduler": "asha",
        "budget": {
            "n_trials": n_trials,
            "max_epochs": max_epochs,
            "max_concurrent_trials": concurrency,
        },  # fmt: skip
        "resources": {"cpus": 2.0 / concurrency},
        "workdir": str(workdir),
        "ensemble": {"enabled": False},
    }


def run_fresh(folder: Path, trainer: str, n_trials: int, concurrency: int) -> Run:
    """Run one study in a new process; its wall time and when its first trial started."""
    name = f"overhead-{trainer}-{concurrency}-{n_trials}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=folder))
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(study_spec(name, trainer, n_trials, concurrency, workdir)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", str(path), "--json"],
        capture_output=True, text=True, env=env, cwd=workdir,
    )  # fmt: skip
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: searchsvc run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    first, accounted = _from_stores(result)
    return Run(wall, first - started, result["finished"], accounted)


def _from_stores(result: dict) -> tuple[float, str]:
    """The first trial's start (epoch seconds) and every trial's state in Optuna and MLflow."""
    import optuna
    from mlflow.tracking import MlflowClient

    paths = result["paths"]
    study = optuna.load_study(study_name=result["name"], storage=paths["storage_url"])
    first = min(t.datetime_start for t in study.trials if t.datetime_start is not None)
    states = Counter(t.state.name for t in study.trials)
    client = MlflowClient(paths["tracking_uri"])
    runs = client.search_runs(
        [result["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'",
        max_results=5000,
    )
    run_states = Counter(r.data.tags.get("searchsvc.state") for r in runs)
    accounted = f"Optuna {dict(states)}; MLflow child runs {len(runs)} {dict(run_states)}"
    return first.timestamp(), accounted


def tiny_fit_s() -> float:
    """The tiny trainer's own time for one trial (2 epochs), in this process, warm."""
    sys.path.insert(0, str(REPO))
    import torch

    from searchsvc.data.datasets import load_dataset
    from searchsvc.trainer import FitOptions
    from trainers.mlp.training import trainer

    torch.set_num_threads(1)  # as in a trial of one CPU or less
    data = load_dataset("synthetic")
    params = {**TINY_PARAMS, "lr": 1e-2, "weight_decay": 1e-4}
    times = []
    for _ in range(4):
        started = time.perf_counter()
        trainer.fit(params, data, lambda report: None, FitOptions(max_epochs=2, seed=0))
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def measure(
    folder: Path, trainer: str, concurrency: int, args: argparse.Namespace, fit_s: float
) -> None:
    """Short and long studies, ``args.repeats`` times each; print the medians and the slope."""
    runs = {n: [run_fresh(folder, trainer, n, concurrency) for _ in range(args.repeats)]
            for n in (args.short, args.long)}  # fmt: skip
    short, long = (statistics.median(r.wall_s for r in runs[n]) for n in (args.short, args.long))
    n_short = statistics.median(r.finished for r in runs[args.short])
    n_long = statistics.median(r.finished for r in runs[args.long])
    slope = (long - short) / (n_long - n_short)
    training = fit_s / min(concurrency, CORES)  # the trainer's own share of the slope
    first = statistics.median(r.first_trial_s for r in runs[args.short] + runs[args.long])
    label = f"{trainer}, {concurrency} concurrent"
    spread = ", ".join(f"{r.wall_s:.1f}" for r in runs[args.long])
    print(f"[{label}] {n_short:.0f} trials: {short:.1f} s; {n_long:.0f} trials: {long:.1f} s "
          f"(medians of {args.repeats}; {n_long:.0f}-trial runs {spread} s)")  # fmt: skip
    target = TARGETS_S.get(concurrency)
    verdict = "" if target is None else f" (target <= {target} s) " + (
        "OK" if slope - training <= target else "OVER TARGET")  # fmt: skip
    overhead = slope - training
    print(f"[{label}] per-trial overhead: {overhead:.3f} s{verdict} (slope {slope:.3f} s less "
          f"training {training:.3f} s)")  # fmt: skip
    print(f"[{label}] command to first trial running: {first:.1f} s (median of "
          f"{2 * args.repeats} runs)")  # fmt: skip
    print(f"[{label}] accounted for ({runs[args.long][-1].finished} trials): "
          f"{runs[args.long][-1].accounted}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=60)
    parser.add_argument("--trainers", nargs="+", default=["noop", "tiny"],
                        choices=["noop", "tiny"])  # fmt: skip
    parser.add_argument("--concurrency", nargs="+", type=int, default=[2, 8])
    args = parser.parse_args()
    print(f"setup: TPE + ASHA, MLflow and Optuna on embedded SQLite, 2 CPUs split over the "
          f"concurrent trials; studies of {args.short} and {args.long} trials, each a fresh "
          "process")  # fmt: skip
    fit_s = {"noop": 0.0}
    if "tiny" in args.trainers:
        fit_s["tiny"] = tiny_fit_s()
        print(f"tiny trainer's own fit time per trial (in-process, one thread, warm): "
              f"{fit_s['tiny']:.3f} s")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-") as tmp:
        for trainer in args.trainers:
            for concurrency in args.concurrency:
                measure(Path(tmp), trainer, concurrency, args, fit_s[trainer])


if __name__ == "__main__":
    main()
