"""Time from ``searchsvc run studies/mnist.yaml`` to a finished trial whose stored weights
reach 98.0% MNIST test accuracy: the median over several seeds.

Each seed runs the flagship study file as a user would (a fresh ``searchsvc run`` process,
fresh embedded stores, the study's own settings), with only its name, ``seed`` and folder
changed. While it runs, this script watches Optuna storage; each finished trial whose weights
are stored is fetched from MLflow and scored on the test split here, in the order the trials
finished. The figure is the first such trial's finish time (Optuna ``datetime_complete``)
minus the moment the command was started; scoring time is not in it. Once a trial reaches
the target the run is stopped with Ctrl-C (SIGINT), as a user would: the benchmark measures
the first good model, not the whole study.

The test split chooses nothing in the study: the sampler, the scheduler and the ensemble see
only the validation split; the test scores here are a measurement after the fact.

Usage: python bench/time_to_good_model.py [--seeds 0 1 2] [--target 0.98] [--max-s 600]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGSHIP = REPO / "studies" / "mnist.yaml"


def study_file(folder: Path, seed: int, source: Path, overrides: list[str]) -> Path:
    """The flagship with its name, seed and folder changed (and ``KEY=VALUE`` overrides)."""
    spec = yaml.safe_load(source.read_text())
    spec["name"] = f"{spec['name']}-seed{seed}"
    spec["seed"] = seed
    spec["workdir"] = str(folder / f"seed{seed}")
    for item in overrides:  # dotted keys, for the smoke test (a smaller study)
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path = folder / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Scorer:
    """Scores finished trials' stored weights on the test split, once each."""

    def __init__(self, spec: dict) -> None:
        from searchsvc.data.datasets import load_dataset

        dataset = dict(spec["dataset"])
        name = dataset.pop("name")
        self.data = load_dataset(name, seed=spec.get("seed", 0), **dataset)
        self.spec = spec
        self.scored: dict[int, float] = {}

    def new_scores(self) -> list[tuple[int, float, float]]:
        """(trial number, finish time as epoch seconds, test accuracy) for the trials that
        finished with stored weights since the last call, in finishing order."""
        import optuna

        from searchsvc import keys

        storage = f"sqlite:///{Path(self.spec['workdir']) / 'optuna.db'}"
        try:
            study = optuna.load_study(study_name=self.spec["name"], storage=storage)
        except Exception:  # not created yet
            return []
        done = [t for t in study.get_trials(deepcopy=False)
                if t.datetime_complete is not None and t.number not in self.scored
                and t.user_attrs.get(keys.WEIGHTS) == keys.WEIGHTS_STORED]  # fmt: skip
        found = []
        for trial in sorted(done, key=lambda t: t.datetime_complete):
            accuracy = self._test_accuracy(trial.number)
            if accuracy is None:  # its model is not in MLflow yet
                continue
            self.scored[trial.number] = accuracy
            found.append((trial.number, trial.datetime_complete.timestamp(), accuracy))
        return found

    def _test_accuracy(self, number: int) -> float | None:
        import json

        import torch
        from mlflow.tracking import MlflowClient

        from searchsvc.ensemble.members import rebuild_network
        from trainers.mlp.training import trainer

        tracking = f"sqlite:///{Path(self.spec['workdir']) / 'mlflow.db'}"
        client = MlflowClient(tracking)
        experiment = client.get_experiment_by_name(self.spec["name"])
        runs = client.search_runs([experiment.experiment_id],
                                  f"tags.`searchsvc.trial_number` = '{number}'")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for run in runs:
                try:
                    local = Path(client.download_artifacts(run.info.run_id, "model", tmp))
                except Exception:
                    continue
                params = json.loads((local / "params.json").read_text())["params"]
                state = torch.load(local / "state_dict.pt", map_location="cpu", weights_only=True)
                net = rebuild_network(trainer, params, self.data.n_features,
                                      self.data.n_classes, state)  # fmt: skip
                with torch.inference_mode():
                    logits = net(torch.as_tensor(self.data.x_test))
                return float((logits.argmax(1).numpy() == self.data.y_test).mean())
        return None


def time_to_target(folder: Path, seed: int, args: argparse.Namespace) -> dict:
    """Run one seed until a finished trial's weights reach the target; what it took."""
    path = study_file(folder, seed, args.study, args.set or [])
    spec = yaml.safe_load(path.read_text())
    scorer = Scorer(spec)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    log = (folder / f"seed{seed}.log").open("w")
    started = time.time()
    command = [sys.executable, "-m", "searchsvc", "run", str(path)]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    hit, trials = None, []
    try:
        while hit is None and time.time() - started < args.max_s:
            ended = proc.poll() is not None
            for number, finished_at, accuracy in scorer.new_scores():
                trials.append((number, finished_at - started, accuracy))
                if hit is None and accuracy >= args.target:
                    hit = (number, finished_at - started, accuracy)
            if ended:
                break
            time.sleep(2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the run ends cleanly
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    return {"seed": seed, "hit": hit, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-s", type=float, default=600.0, help="give up after this")
    parser.add_argument("--study", type=Path, default=FLAGSHIP)
    parser.add_argument("--set", action="append", help="KEY=VALUE override (smoke test)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    print(f"study: {args.study.name} (seeds {args.seeds}); target: test accuracy >= "
          f"{args.target:.3f} of a finished trial's stored weights")  # fmt: skip
    times = []
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-") as tmp:
        for seed in args.seeds:
            result = time_to_target(Path(tmp), seed, args)
            scored = ", ".join(f"trial {n} at {t:.0f} s: {a:.4f}" for n, t, a in result["trials"])
            print(f"seed {seed}: finished trials scored: {scored or 'none'}")
            if result["hit"] is None:
                print(f"seed {seed}: no trial reached {args.target:.3f} in {args.max_s:.0f} s")
                continue
            number, seconds, accuracy = result["hit"]
            times.append(seconds)
            print(f"seed {seed}: time to target: {seconds:.1f} s (trial {number}, test "
                  f"accuracy {accuracy:.4f})")  # fmt: skip
    if times:
        print(f"time to target, median of {len(times)} seed(s) that reached it "
              f"({len(args.seeds)} run): {statistics.median(times):.1f} s "
              f"(each: {', '.join(f'{t:.1f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
