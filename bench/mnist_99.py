"""``studies/mnist_99.yaml`` as a user runs it, then its ensemble's test accuracy against time.

Runs ``searchsvc run studies/mnist_99.yaml`` once (a fresh process, fresh embedded stores in
a temporary folder, the study's own settings) and prints the wall time and the registered
ensemble's and best single trial's test accuracy, NLL and ECE, from the command's ``--json``.

Then, after the fact, the curve: for each moment a network finished (a completed trial or a
reseed, by its end time in Optuna or MLflow), the greedy ensemble the build would have chosen
on the validation split among the networks finished by then, and its test accuracy and NLL.
The test split chooses nothing; it is scored here only. With ``refit: true`` the first lines
are the refit networks' scores and ``pre_refit_*`` the networks as searched; the curve is
always the networks as searched (the refit comes after the last of them). "Full runs" counts
the networks that trained to their end (complete trials, finished reseeds) with stored
weights.

Usage: python bench/mnist_99.py [--study studies/mnist_99.yaml] [--workdir DIR] [--score-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from searchsvc import keys  # noqa: E402
from searchsvc.ensemble.candidates import Source, gather_candidates  # noqa: E402
from searchsvc.ensemble.metrics import scores  # noqa: E402
from searchsvc.ensemble.predictor import member_val_probs  # noqa: E402
from searchsvc.ensemble.selection import select_members  # noqa: E402
from searchsvc.study.loader import load_study  # noqa: E402
from searchsvc.study_run import StudyRun  # noqa: E402


def run_study(study: Path, workdir: Path) -> tuple[float, dict]:
    """One ``searchsvc run --json``: its wall time and its result."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", str(study), "--workdir", str(workdir),
         "--json"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"searchsvc run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    sys.stderr.write(done.stderr[-2000:])
    return wall, json.loads(done.stdout)


def finished_networks(run: StudyRun) -> list[tuple[float, Source]]:
    """Every network with stored weights and its end time (seconds since the epoch)."""
    import optuna

    tracker = run.tracker
    runs = tracker.trial_runs()
    out = []
    for trial in run.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        source = Source(trial.number, float(trial.values[0]), runs.get(trial.number),
                        weights=str(trial.user_attrs.get(keys.WEIGHTS, "")))  # fmt: skip
        out.append((trial.datetime_complete.timestamp(), source))
    reseeds = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{keys.TAG_RETRAIN}` = 'reseed' and attributes.status = 'FINISHED'",
        max_results=1000,
    )
    for r in reseeds:
        tags = r.data.tags
        source = Source(int(tags[keys.TAG_RETRAIN_OF]), float(tags.get("searchsvc.value", "nan")),
                        r.info.run_id, reseed=int(tags[keys.TAG_RESEED]))  # fmt: skip
        out.append((r.info.end_time / 1000.0, source))
    return sorted(out, key=lambda item: item[0])


def curve(run: StudyRun, started: float) -> list[dict]:
    """The greedy ensemble's test scores each time a network finished."""
    spec, data = run.spec, run.data
    timed = finished_networks(run)
    download = lambda run_id, folder: Path(  # noqa: E731
        run.tracker.client.download_artifacts(run_id, "model", str(folder))
    )
    with tempfile.TemporaryDirectory() as tmp:
        pool, _ = gather_candidates([s for _, s in timed], download, run.trainer, data,
                                    Path(tmp), len(timed))  # fmt: skip
    val = np.stack([c.val_probs for c in pool])
    test = np.stack([member_val_probs([c.network], data.x_test)[0] for c in pool])
    rows = []
    for count in range(1, len(pool) + 1):
        weights = select_members(spec.ensemble.method, val[:count], data.y_val, spec.ensemble.size)
        probs = np.tensordot(weights, test[:count], axes=1)
        result = scores(probs, data.y_test)
        rows.append({"minutes": (timed[count - 1][0] - started) / 60, "networks": count,
                     "members": int(np.count_nonzero(weights)), **result})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REPO / "studies" / "mnist_99.yaml")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--score-only", action="store_true", help="score a finished workdir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mnist99-"))
    started = time.time()
    if not args.score_only:
        wall, result = run_study(args.study, workdir)
        summary = result["ensemble"]
        reseeds = result["reseeds"] or "none"
        print(f"wall time: {wall / 60:.1f} min ({result['complete']} complete, "
              f"{result['pruned']} pruned trials; reseeds: {reseeds})")  # fmt: skip
        labels = ["best_single", "ensemble"]
        if summary.get("refit"):
            print(f"refit on training + validation data: {', '.join(summary['refit'])}")
            labels += ["pre_refit_best_single", "pre_refit_ensemble"]
        elif summary.get("refit_failed"):
            print(f"refit failed: {summary['refit_failed']}")
        for label in labels:
            s = summary[label]
            print(f"{label}: test accuracy {s['accuracy']:.4f}, NLL {s['nll']:.4f}, "
                  f"ECE {s['ece']:.4f}")  # fmt: skip
    run = StudyRun.prepare(load_study(args.study), workdir=workdir)
    run.open_existing()
    run.load_data()
    run.attach_tracking()
    if args.score_only:
        started = run.study.trials[0].datetime_start.timestamp()
    rows = curve(run, started)
    print("minutes  networks  members  test accuracy  test NLL")
    for row in rows:
        print(f"{row['minutes']:7.1f}  {row['networks']:8d}  {row['members']:7d}  "
              f"{row['accuracy']:13.4f}  {row['nll']:8.4f}")  # fmt: skip
    full = len(rows)
    print(f"full runs (complete trials and finished reseeds, weights stored): {full}")


if __name__ == "__main__":
    main()
