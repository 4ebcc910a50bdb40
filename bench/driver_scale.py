"""The driver at scale: time and store round trips per finished trial, window by window, over a
long study of the no-op trainer; how many trials run at once; optionally a profile.

The study is the one a new user would write to try the service at scale: ``trainer: noop``,
``dataset: synthetic``, 4 searched params, TPE + ASHA, 8 concurrent trials of 0.25 CPU, 3
epochs each reported, MLflow and Optuna on embedded SQLite, nothing switched off. It runs in
this process through the Python API (``searchsvc.api.run``), so ``bench/driver_probe.py`` can
count the driver's SQL statements and transactions per store and its MLflow calls after every
trial's tell.

Printed:

- per 100-trial window of finished trials (in the order Optuna was told): the mean interval
  between completions, the driver's CPU seconds per trial, and the round trips per trial;
- flatness: the slowest window against trials 100-199 (the issue's target: at most 1.2x);
- running at once: the time-weighted mean number of trials between their start and end in
  Optuna storage (``datetime_start`` at ask, ``datetime_complete`` at tell), over the span
  from the first start to the last end;
- the end of the run: from the last tell to the API call returning (summary, report, stores);
- exact counts by state in Optuna and among MLflow's child runs, which must agree.

``--sleep S``: each epoch sleeps S seconds (the concurrency check: with 8 allowed, how many
run). ``--profile FILE``: run under cProfile (main thread: Tune's loop, the searcher and the
callbacks run there) and print where the driver's time went; profiled timings are inflated by
the profiler, so the windows of a profiled run are not the figures to quote.

Usage: python bench/driver_scale.py [--trials 2000] [--concurrency 8] [--cpus 0.25]
       [--epochs 3] [--sleep 0] [--sampler-option KEY=VALUE ...] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from driver_probe import Probe  # noqa: E402
from driver_profile import print_profile  # noqa: E402

WINDOW = 100
TARGET_FLATNESS = 1.2


def study_spec(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The benchmark's study file (see the module doc)."""
    space: dict[str, Any] = {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "x1": {"type": "float", "low": -1.0, "high": 1.0},
        "x2": {"type": "float", "low": -1.0, "high": 1.0},
        "x3": {"type": "float", "low": -1.0, "high": 1.0},
    }
    if args.sleep:
        space["epoch_sleep_s"] = args.sleep
    sampler: dict[str, Any] = {"name": "tpe"}
    for option in args.sampler_option:
        key, value = option.split("=", 1)
        sampler[key] = yaml.safe_load(value)
    return {
        "name": f"driver-scale-{args.trials}",
        "trainer": "noop",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": space,
        "sampler": sampler,
        "scheduler": "asha",
        "budget": {
            "n_trials": args.trials,
            "max_epochs": args.epochs,
            "max_concurrent_trials": args.concurrency,
        },  # fmt: skip
        "resources": {"cpus": args.cpus},
        "workdir": str(workdir),
        "ensemble": {"enabled": False},
        **({"storage": args.storage} if args.storage else {}),
        **({"tracking_uri": args.tracking_uri} if args.tracking_uri else {}),
    }


def run(args: argparse.Namespace, workdir: Path, probe: Probe) -> tuple[Any, float, float]:
    """Run the study; its result, its wall time and when the API call returned."""
    import searchsvc.api

    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(study_spec(args, workdir)))
    options = {"address": args.address} if args.address else {}
    started = time.time()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(searchsvc.api.run, path, **options)
        profiler.dump_stats(args.profile)
    else:
        result = searchsvc.api.run(path, **options)
    returned = time.time()
    return result, returned - started, returned


def windows(trials: list[Any], probe: Probe) -> list[tuple[str, float, float, dict[str, float]]]:
    """(label, mean completion interval, driver CPU s per trial, round trips per trial) for
    each full window of finished trials, in tell order."""
    ends = [s.wall for s in probe.snapshots]
    first_start = min(t.datetime_start.timestamp() for t in trials if t.datetime_start)
    rows = []
    for k in range(len(ends) // WINDOW):
        lo, hi = k * WINDOW, (k + 1) * WINDOW - 1
        before = ends[lo - 1] if lo else first_start
        interval = (ends[hi] - before) / WINDOW
        a = probe.snapshots[max(lo - 1, 0)]
        b = probe.snapshots[hi]
        cpu = (b.cpu - a.cpu) / (hi - max(lo - 1, 0))
        rows.append((f"{lo}-{hi}", interval, cpu, probe.per_trial(max(lo - 1, 0), hi)))
    return rows


def _spans(trials: list[Any]) -> tuple[list[tuple[float, float]], float]:
    """Each finished trial's (start, end) in Optuna storage, and the time from the first start
    to the last end."""
    spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp())
             for t in trials if t.datetime_start and t.datetime_complete]  # fmt: skip
    if not spans:
        return [], 0.0
    return spans, max(e for _, e in spans) - min(s for s, _ in spans)


def running_at_once(trials: list[Any]) -> float:
    """Time-weighted mean of trials between start and end in Optuna, first start to last end."""
    spans, span = _spans(trials)
    return sum(e - s for s, e in spans) / span if span else 0.0


def sleeping_at_once(trials: list[Any], sleep_s: float) -> float:
    """Mean number of trials inside an epoch's sleep, from the first start to the last end: the
    stricter count (a trial waiting for its worker, or for the driver, is not counted)."""
    _, span = _spans(trials)
    epochs = sum(len(t.intermediate_values) for t in trials)
    return epochs * sleep_s / span if span else 0.0


def accounted(result: Any, trials: list[Any]) -> tuple[str, bool]:
    """Exact counts by state in Optuna (``trials``, read back from its storage) and among
    MLflow's child runs, and whether they agree."""
    from mlflow.tracking import MlflowClient

    states = Counter(t.state.name for t in trials)
    client = MlflowClient(result.paths.tracking_uri)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [result.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
            max_results=1000, page_token=token,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            break
    run_states = Counter(r.data.tags.get("searchsvc.state") for r in runs)
    agree = dict(states) == dict(run_states) and len(runs) == sum(states.values())
    text = f"Optuna {dict(sorted(states.items()))}; MLflow child runs {len(runs)} " \
           f"{dict(sorted(run_states.items()))}"  # fmt: skip
    return text, agree


def report(args: argparse.Namespace, result: Any, wall: float, returned: float,
           probe: Probe) -> dict[str, Any]:  # fmt: skip
    """Print the figures (see the module doc); returns them for ``--json``."""
    import optuna

    study = optuna.load_study(study_name=result.name, storage=result.paths.storage_url)
    trials = study.get_trials(deepcopy=False)
    print(f"{len(trials)} trials in {wall:.1f} s: {result.complete} complete, {result.pruned} "
          f"pruned, {result.failed} failed")  # fmt: skip
    rows = windows(trials, probe)
    keys = sorted({k for *_, counts in rows for k in counts})
    print("window | s per trial | driver CPU s per trial | " + " | ".join(keys))
    for label, interval, cpu, counts in rows:
        cells = " | ".join(f"{counts.get(k, 0):.1f}" for k in keys)
        print(f"{label} | {interval:.3f} | {cpu:.3f} | {cells}")
    if len(rows) >= 2:
        reference = rows[1][1]
        worst = max(rows[1:], key=lambda r: r[1])
        verdict = "OK" if worst[1] <= TARGET_FLATNESS * reference else "OVER TARGET"
        print(f"flatness: slowest window {worst[0]} {worst[1]:.3f} s per trial = "
              f"{worst[1] / reference:.2f}x trials 100-199 ({reference:.3f} s) "
              f"(target <= {TARGET_FLATNESS}x) {verdict}")  # fmt: skip
    running = running_at_once(trials)
    print(f"running at once (time-weighted, Optuna start to end): "
          f"{running:.2f} of {args.concurrency} allowed")  # fmt: skip
    if args.sleep:
        print(f"sleeping at once (epochs reported x {args.sleep} s over the same span): "
              f"{sleeping_at_once(trials, args.sleep):.2f}")  # fmt: skip
    if probe.snapshots:
        print(f"end of the run (last tell to the API call returning): "
              f"{returned - probe.snapshots[-1].wall:.1f} s")  # fmt: skip
    text, agree = accounted(result, trials)
    print(f"accounted for: {text}: {'they agree' if agree else 'THEY DISAGREE'}")
    return {
        "trials": len(trials), "wall_s": wall, "agree": agree, "accounted": text,
        "running_at_once": running,
        "windows": [{"trials": label, "s_per_trial": interval, "driver_cpu_s_per_trial": cpu,
                     "round_trips_per_trial": counts} for label, interval, cpu, counts in rows],
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cpus", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--sampler-option", action="append", default=[])
    parser.add_argument("--storage", help="Optuna storage URL (default: embedded SQLite)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded)")
    parser.add_argument("--address", help="a Ray cluster to join (default: a local Ray)")
    parser.add_argument("--profile", help="write a cProfile of the run here and summarise it")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep the study's folder here (default: temporary)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    # As the CLI does: MLflow prints a line per run it ends over HTTP otherwise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    probe = Probe().install()
    stores = f"{args.storage or 'embedded SQLite'} / {args.tracking_uri or 'embedded MLflow'}"
    print(f"setup: no-op trainer, 4 params, TPE {args.sampler_option or ''}+ ASHA, "
          f"{args.concurrency} concurrent of {args.cpus} CPU, {args.epochs} epochs reported, "
          f"epoch sleep {args.sleep} s, {args.trials} trials, stores: {stores}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="searchsvc-driver-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result, wall, returned = run(args, workdir, probe)
        figures = report(args, result, wall, returned, probe)
    if args.profile:
        print_profile(args.profile, n_trials=args.trials)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    if not figures["agree"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
