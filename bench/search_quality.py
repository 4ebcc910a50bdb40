"""Search quality at a wall-clock budget: this service (TPE, random) against stock Ray Tune.

Three arms, one search space, trainer, data, ASHA setting, concurrency and wall-clock budget,
several seeds S (issue #23, point 1); each arm-seed in a fresh process (``--child``):

- ``service-tpe`` / ``service-random``: a generated study file (``sampler: tpe`` / ``random``,
  ``seed: S``) through ``run_study``, as ``searchsvc run`` runs it.
- ``stock``: Ray Tune's ``OptunaSearch`` (its default ``TPESampler(seed=S)``) + ``ASHAScheduler``
  over a function trainable that calls the same trainer (``trainers.mlp``, trainer contract) and
  ``tune.report``s val_accuracy each epoch; no MLflow, checkpoints or weights. Added only to
  score its choice: the define-by-run space returns the trial's training seed (S + trial number,
  the service's rule) as a config constant; an ``InMemoryStorage``, read back after ``fit``; the
  Optuna best trial retrained in the driver (same params, seed, ``max_epochs``, stopped after
  its ``training_iteration`` epochs) and that network scored on test.

Data: MNIST; ``val_size`` validation images carved from the 60,000 training images, then
``train_subset`` of the other 55,000 for training (seeded by S); the test split only scores.

Definitions, alike for every arm. t = 0: the first trial's ``datetime_start`` in the arm's Optuna
study (the first ask); a trial finishes at its ``datetime_complete``. **Best val_accuracy at t**:
the best value the arm's Optuna study recorded for a COMPLETE trial finished by t, i.e. its
``best_value`` as it stood at t (the model it would hand over if stopped then). What Optuna
records differs by arm, the claim under test: the service records a trial stopped early (ASHA,
time budget) PRUNED, never best, and a COMPLETE one with the val_accuracy of the epoch whose
weights it keeps (lowest val_loss); stock Tune records an ASHA-stopped trial COMPLETE with its
last value, so it can be chosen, and a trial running when the budget ends stays RUNNING (not
counted). **Best epoch seen**: the best val_accuracy reported at any epoch by any trial finished
by the budget (no arm hands that model over). **Chosen model**: the arm's ``best_trial`` at the
end (a service trial may end up to an epoch after the deadline); service: its weights from
MLflow, loaded as the ensemble loads a candidate; stock: retrained.

Usage: python bench/search_quality.py [--budget-s 300] [--seeds 0 1 2] [--arms ..] [--results D]
(``--smoke``: tiny data, budget and one seed, for the test; raw JSON kept only with --results)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
import yaml
from rich.console import Console

from searchsvc import keys
from searchsvc.data.datasets import load_dataset
from searchsvc.ensemble.candidates import gather_candidates, trial_sources
from searchsvc.ensemble.members import rebuild_network
from searchsvc.execution.runner import run_study  # imports no Ray: its Ray settings come first
from searchsvc.search.space import suggest_params
from searchsvc.study.loader import load_study
from searchsvc.study.spec import StudySpec
from searchsvc.study_run import StudyRun
from searchsvc.tracking import MODEL_DIR
from searchsvc.trainer import Dataset, EpochReport, FitOptions, TrialStopped
from trainers.mlp import trainer

log = logging.getLogger("search_quality")

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results" / "search_quality"
ARMS = ("service-tpe", "service-random", "stock")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
METRIC = "val_accuracy"
SEARCH_SPACE: dict[str, dict[str, Any]] = {  # no `when:`: every arm encodes it identically
    "n_layers": {"type": "int", "low": 1, "high": 3},
    "width": {"type": "int", "low": 32, "high": 512, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "tanh", "elu", "leaky_relu"]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "optimizer": {"type": "categorical", "choices": ["adam", "momentum", "rmsprop"]},
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1.0e-8, "high": 1.0e-3, "log": True},
}
CONSTANTS = {"batch_size": 128, "patience": 0, "lr_schedule": "none", "diagnostics": False}


@dataclass(frozen=True)
class Settings:
    """What every arm shares (the sampler and the wiring are the arm's)."""

    budget_s: float = 300.0
    train_subset: int = 10_000
    val_size: int = 5_000
    max_epochs: int = 20
    grace_period: int = 2
    reduction_factor: int = 3
    concurrency: int = 2
    trial_cap: int = 10_000  # n_trials / num_samples: large, so that time is the limit


SMOKE = Settings(budget_s=20.0, train_subset=1_000, val_size=500, max_epochs=4)


def study_spec(arm: str, seed: int, s: Settings, workdir: Path) -> dict[str, Any]:
    """The study file of a service arm."""
    return {
        "name": f"sq-{arm}-seed{seed}", "trainer": "mlp",
        "dataset": {"name": "mnist", "val_size": s.val_size, "train_subset": s.train_subset},
        "objective": {"metric": METRIC, "mode": "max"},
        "search_space": {**SEARCH_SPACE, **CONSTANTS},
        "sampler": {"name": "tpe" if arm == "service-tpe" else "random"},
        "scheduler": {"name": "asha", "grace_period": s.grace_period,
                      "reduction_factor": s.reduction_factor},
        "budget": {"n_trials": s.trial_cap, "max_epochs": s.max_epochs,
                   "time_budget_s": s.budget_s, "max_concurrent_trials": s.concurrency},
        "resources": {"cpus": 1}, "seed": seed, "workdir": str(workdir),
        "ensemble": {"enabled": False},
    }  # fmt: skip


def arm_configuration(arm: str, s: Settings) -> dict[str, str]:
    """Every setting of one arm, as printed and stored with its results."""
    asha = (f"ASHA on {METRIC} (max), time in epochs, grace_period {s.grace_period}, "
            f"reduction_factor {s.reduction_factor}, max_t {s.max_epochs}, 1 bracket")  # fmt: skip
    config = {
        "trainer": "mlp (trainers.mlp, the trainer contract), training seed S + trial number",
        "data": f"MNIST: {s.val_size} validation carved from the 60,000 training images, "
        f"{s.train_subset} of the rest for training (both seeded by S); test split scores only",
        "search space": json.dumps(SEARCH_SPACE),
        "constants": ", ".join(f"{k}={v}" for k, v in CONSTANTS.items()),
        "concurrency": f"{s.concurrency} trials at a time, 1 CPU each, {os.cpu_count()}-CPU Ray",
    }
    if arm == "stock":
        return config | {
            "path": "ray.tune.Tuner + OptunaSearch + ASHAScheduler, function trainable; Tune's "
            "defaults otherwise (reuse_actors False, no checkpoints, default loggers)",
            "sampler": "OptunaSearch(define-by-run space, seed=S): its default TPESampler(seed=S)"
            " (Optuna 5: n_startup_trials 10, multivariate, constant_liar, group off)",
            "scheduler": f"{asha}, stop_last_trials True (Tune's default)",
            "budget": f"TuneConfig(time_budget_s={s.budget_s:g}), num_samples {s.trial_cap}",
            "early-stopped trials": "COMPLETE in Optuna with their last reported value",
            "added to the stock wiring": "the seed as a config constant, an InMemoryStorage to "
            "read the study back, the best trial retrained (same params, seed, epochs)",
        }
    sampler = ("TPESampler(n_startup_trials=10, multivariate, group, constant_liar, seed=S)"
               if arm == "service-tpe" else "RandomSampler(seed=S)")  # fmt: skip
    return config | {
        "path": "run_study of a generated study file (as searchsvc run), ensemble and report off",
        "sampler": sampler,
        "scheduler": f"{asha}, stop_last_trials False",
        "budget": f"time_budget_s {s.budget_s:g} (no trial starts after it; running trials stop "
        f"at their epoch's end, PRUNED), n_trials {s.trial_cap}",
        "early-stopped trials": "PRUNED in Optuna; COMPLETE ones valued at the epoch whose "
        "weights go to MLflow (the best trial's are scored on test)",
    }


def search_summary(trials: list, epochs: dict[int, int], seed: int, s: Settings) -> dict:
    """Per-trial records on the arm's clock, the best value at each fixed time, the chosen."""
    t0 = min(t.datetime_start for t in trials if t.datetime_start is not None)
    records = []
    for t in trials:
        seen = [*t.intermediate_values.values(), *([t.value] if t.value is not None else [])]
        done = t.datetime_complete
        records.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            "best_epoch_value": max(seen) if seen else None,
            "epochs": epochs.get(t.number, len(t.intermediate_values)),
            "finished_s": None if done is None else (done - t0).total_seconds(),
            "params": t.params,
        })  # fmt: skip
    finished = [r for r in records if r["finished_s"] is not None]
    by = [r for r in finished if r["finished_s"] <= s.budget_s]
    complete = [r for r in finished if r["state"] == "COMPLETE"]
    best_at = {str(f): max((r["value"] for r in complete if r["finished_s"] <= f * s.budget_s),
                           default=None) for f in FRACTIONS}  # fmt: skip
    best = max(complete, key=lambda r: r["value"], default=None)  # Optuna's best_trial
    return {
        "t0": t0.isoformat(), "states": dict(Counter(r["state"] for r in records)),
        "trials": records, "best_at": best_at, "finished_by_budget": len(by),
        "best_epoch_seen": max((r["best_epoch_value"] for r in by
                                if r["best_epoch_value"] is not None), default=None),
        "chosen": {"number": None, "value": None, "test_accuracy": None} if best is None else {
            **{k: best[k] for k in ("number", "value", "params", "epochs", "finished_s")},
            "seed": seed + best["number"], "test_accuracy": None},
    }  # fmt: skip


def scores(network: torch.nn.Module, data: Dataset) -> tuple[float, float]:
    """Validation and test accuracy of one network (the test split chooses nothing)."""
    splits = ((data.x_val, data.y_val), (data.x_test, data.y_test))
    with torch.no_grad():  # the network is in eval mode (rebuild_network)
        return tuple(float((network(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
                     for x, y in splits)  # fmt: skip


def run_service(arm: str, seed: int, s: Settings, folder: Path) -> dict[str, Any]:
    """One seed of a service arm through the product path; its best trial scored on test."""
    path = folder / "study.yaml"  # params unsorted: asked in the order the stock arm asks them
    path.write_text(yaml.safe_dump(study_spec(arm, seed, s, folder / "w"), sort_keys=False))
    run = StudyRun.prepare(load_study(path))
    result = run_study(run, console=Console(quiet=True), build_ensemble=False, build_report=False)
    if result.interrupted or result.status != "FINISHED":
        raise RuntimeError(f"{arm} seed {seed}: the study ended {result.status}")
    study = optuna.load_study(study_name=result.name, storage=result.paths.storage_url)
    trials = study.get_trials(deepcopy=False)
    epochs = {t.number: int(t.user_attrs.get(keys.EPOCHS, 0)) for t in trials}
    raw = search_summary(trials, epochs, seed, s)
    chosen = raw["chosen"]
    if chosen["number"] is None:
        return raw
    tracker = run.tracker  # the stored weights, loaded as the ensemble loads a candidate

    def download(run_id: str, target: Path) -> Path:
        return Path(tracker.client.download_artifacts(run_id, MODEL_DIR, str(target)))

    with tempfile.TemporaryDirectory(prefix="searchsvc-sq-model-") as tmp:
        best = [trials[chosen["number"]]]
        sources = trial_sources(best, tracker.trial_runs())
        pool, skipped = gather_candidates(sources, download, run.trainer, run.data, Path(tmp), 1)
    if pool:
        chosen["stored_val_accuracy"], chosen["test_accuracy"] = scores(pool[0].network, run.data)
    else:
        chosen["no_model"] = skipped[0].reason if skipped else "not loaded"
    return raw


def stock_space(trial: Any, seed: int, space: dict) -> dict[str, Any]:
    """OptunaSearch's define-by-run space: the trial asked through the service's own encoding
    (``suggest_params``), plus its training seed as a constant (the one addition)."""
    suggest_params(trial, space)  # the constants come from the Tuner's param_space
    return {"seed": seed + trial.number}


def stock_trainable(config: dict[str, Any], data: Dataset, max_epochs: int) -> None:
    """The stock wiring's trial: the trainer's fit, one ``tune.report`` per epoch."""
    from ray import tune

    def report(epoch: EpochReport) -> None:
        tune.report({METRIC: float(epoch.metrics[METRIC])})

    params = {k: v for k, v in config.items() if k != "seed"}
    trainer.fit(params, data, report, FitOptions(max_epochs=max_epochs, seed=int(config["seed"])))


def search_stock(seed: int, s: Settings, data: Dataset, folder: Path) -> tuple[Any, dict]:
    """The stock search; its Optuna study and each trial's epochs (``training_iteration``)."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    space = StudySpec.model_validate(study_spec("stock", seed, s, folder)).search_space
    storage = optuna.storages.InMemoryStorage()
    searcher = OptunaSearch(functools.partial(stock_space, seed=seed, space=space),
                            metric=METRIC, mode="max", seed=seed, storage=storage,
                            study_name="stock")  # fmt: skip
    scheduler = tune.schedulers.ASHAScheduler(
        metric=METRIC, mode="max", max_t=s.max_epochs, grace_period=s.grace_period,
        reduction_factor=s.reduction_factor)  # fmt: skip
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=s.trial_cap,
        max_concurrent_trials=s.concurrency, time_budget_s=s.budget_s)  # fmt: skip
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)  # fmt: skip
    try:
        trainable = tune.with_parameters(stock_trainable, data=data.without_test(),
                                         max_epochs=s.max_epochs)  # fmt: skip
        run_config = tune.RunConfig(name="stock", storage_path=str(folder / "ray"), verbose=0)
        grid = tune.Tuner(trainable, param_space=dict(CONSTANTS), tune_config=tune_config,
                          run_config=run_config).fit()  # fmt: skip
    finally:
        ray.shutdown()
    epochs = {int(r.config["seed"]) - seed: int((r.metrics or {}).get("training_iteration", 0))
              for r in grid if r.config and "seed" in r.config}  # fmt: skip
    return optuna.load_study(study_name="stock", storage=storage), epochs


def retrain(params: dict, seed: int, epochs: int, s: Settings, data: Dataset) -> tuple:
    """The stock trial again (params, seed, max_epochs), stopped after ``epochs``: its network."""
    torch.set_num_threads(1)  # as in the trial (Ray's OMP_NUM_THREADS for a 1-CPU trial)
    last: list[EpochReport] = []

    def report(epoch: EpochReport) -> None:
        last.append(epoch)
        if epoch.epoch >= epochs:
            raise TrialStopped

    full = {**params, **CONSTANTS}
    with contextlib.suppress(TrialStopped):
        trainer.fit(full, data.without_test(), report, FitOptions(s.max_epochs, seed=seed))
    state = last[-1].training_state["model"]
    net = rebuild_network(trainer, full, data.n_features, data.n_classes, state, who="retrained")
    return net, float(last[-1].metrics[METRIC]), last[-1].epoch


def run_stock(arm: str, seed: int, s: Settings, folder: Path) -> dict[str, Any]:
    """One seed of stock Ray Tune; its Optuna best trial retrained and scored on test."""
    data = load_dataset("mnist", val_size=s.val_size, train_subset=s.train_subset, seed=seed)
    study, epochs = search_stock(seed, s, data, folder)
    raw = search_summary(study.get_trials(deepcopy=False), epochs, seed, s)
    chosen = raw["chosen"]
    if chosen["number"] is not None:
        net, val, ran = retrain(chosen["params"], chosen["seed"], chosen["epochs"], s, data)
        chosen.update(retrained_val_accuracy=val, retrained_epochs=ran,
                      test_accuracy=scores(net, data)[1],
                      reproduced=abs(val - chosen["value"]) < 1e-9)  # fmt: skip
    return raw


def cell(values: list[float | None], n: int, digits: int = 4) -> str:
    """mean ± sample std (min-max) over the seeds that have a value."""
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    mean, low, high = (f"{v:.{digits}f}" for v in (statistics.mean(got), min(got), max(got)))
    spread = f"{statistics.stdev(got):.{digits}f}" if len(got) > 1 else "n/a"
    text = f"{mean} ± {spread} ({low}-{high})"
    return text if len(got) == n else f"{text} [{len(got)}/{n} seeds]"


def table(raws: dict[str, list[dict[str, Any]]], s: Settings) -> pd.DataFrame:
    """Rows: the measures (mean ± std (min-max) over the seeds); columns: the arms."""
    columns = {}
    for arm, runs in raws.items():
        rows: dict[str, tuple[list, int]] = {
            f"best val_accuracy at {f:.0%} ({f * s.budget_s:g} s)":
                ([r["best_at"][str(f)] for r in runs], 4) for f in FRACTIONS
        }  # fmt: skip
        rows |= {
            "best epoch seen by the budget, any state": ([r["best_epoch_seen"] for r in runs], 4),
            "trials finished by the budget": ([r["finished_by_budget"] for r in runs], 1),
            "chosen trial val_accuracy": ([r["chosen"]["value"] for r in runs], 4),
            "chosen model test accuracy": ([r["chosen"]["test_accuracy"] for r in runs], 4),
            "arm wall time (s)": ([r["wall_s"] for r in runs], 0),
        }
        columns[arm] = {"seeds": " ".join(str(r["seed"]) for r in runs)} | {
            label: cell(values, len(runs), digits) for label, (values, digits) in rows.items()
        }
    return pd.DataFrame(columns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, help="wall-clock budget per arm-seed")
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (smoke: 0)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--results", type=Path, help=f"raw JSON folder (default {RESULTS})")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budget, for tests")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.child:  # one arm-seed in this fresh process; its raw results to --out
        s, started = Settings(**json.loads(args.settings)), time.perf_counter()
        arm, seed = args.child, args.seeds[0]
        with tempfile.TemporaryDirectory(prefix="searchsvc-sq-") as tmp:
            raw = (run_stock if arm == "stock" else run_service)(arm, seed, s, Path(tmp))
        raw.update(arm=arm, seed=seed, settings=asdict(s), configuration=arm_configuration(arm, s),
                   wall_s=time.perf_counter() - started)  # fmt: skip
        args.out.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
        return 0
    s = SMOKE if args.smoke else Settings()
    s = s if args.budget_s is None else replace(s, budget_s=args.budget_s)
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    for arm in args.arms:
        print(f"== configuration: {arm} ==")
        config = {"seeds": " ".join(map(str, seeds))} | arm_configuration(arm, s)
        print("\n".join(f"  {key}: {value}" for key, value in config.items()))
    raws: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory(prefix="searchsvc-sq-raw-") as scratch:
        folder = args.results or (Path(scratch) if args.smoke else RESULTS)
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:  # arms interleaved, so a drift of the machine hits them alike
            for arm in args.arms:  # each in a fresh process
                out = folder / f"{arm}-seed{seed}.json"
                proc = subprocess.run(
                    [sys.executable, str(HERE), "--child", arm, "--seeds", str(seed),
                     "--settings", json.dumps(asdict(s)), "--out", str(out)],
                    cwd=scratch, capture_output=True, text=True, timeout=s.budget_s + 900,
                )  # fmt: skip
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                    raise SystemExit(f"{arm} seed {seed}: exit {proc.returncode}")
                raws[arm].append(raw := json.loads(out.read_text()))
                log.info("%s seed %d: %s, chosen %s, %.0f s", arm, seed, raw["states"],
                         raw["chosen"], raw["wall_s"])  # fmt: skip
    print(f"\n== search quality: {s.budget_s:g} s budget, {len(seeds)} seed(s) ==")
    print(table(raws, s).to_string())
    print("(mean ± sample std (min-max) over seeds; definitions: bench/search_quality.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
