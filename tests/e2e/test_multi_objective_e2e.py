"""A two-objective study (validation accuracy vs parameter count) through real Ray, Optuna
storage and MLflow: the run summary, ``status``, ``trials``, the report and the ensemble's
candidates all follow the Pareto front, computed here from the stored values by hand."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import searchsvc_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STUDY = {
    "name": "front",
    "trainer": "mlp",
    "dataset": "synthetic",
    "objective": [
        {"metric": "val_accuracy", "mode": "max"},
        {"metric": "n_params", "mode": "min"},
    ],
    "search_space": {
        "n_layers": 1,
        "width_1": {"type": "int", "low": 2, "high": 64, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "batch_size": 64,
    },
    "sampler": {"name": "random"},
    "scheduler": "none",
    "budget": {"n_trials": 5, "max_epochs": 2, "max_concurrent_trials": 2},
    "seed": 3,
    "ensemble": {"method": "greedy", "size": 4, "candidates": 8},
}


def _front_by_hand(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Trials no other one matches or beats on both objectives, best accuracy first."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]

    def dominated(t):
        return any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
            for o in done
        )

    front = [t for t in done if not dominated(t)]
    return [t.number for t in sorted(front, key=lambda t: (-t.values[0], t.number))]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, str, list[int], list[optuna.trial.FrozenTrial]]:
    folder = tmp_path_factory.mktemp("front")
    (folder / "front.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    done = searchsvc_cli(folder, "run", "front.yaml", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{folder / 'runs' / 'front' / 'optuna.db'}"
    trials = optuna.load_study(study_name="front", storage=storage).trials
    front = _front_by_hand(trials)
    assert front, "no completed trial"
    return folder, done.stdout, front, trials


def test_the_run_summary_is_the_pareto_front(ran) -> None:
    _, stdout, front, trials = ran
    assert "Pareto front (validation)" in stdout
    table = stdout[stdout.index("Pareto front (validation)") : stdout.index("test split")]
    shown = [int(line.split("│")[1]) for line in table.splitlines() if line.startswith("│")
             and line.split("│")[1].strip().isdigit()]  # fmt: skip
    assert shown == front
    assert "val_accuracy" in table and "n_params" in table


def test_status_and_trials_show_the_pareto_front(ran) -> None:
    folder, _, front, trials = ran
    status = json.loads(searchsvc_cli(folder, "status", "front.yaml", "--json").stdout)
    assert status["pareto"] is True
    assert status["metrics"] == ["val_accuracy", "n_params"]
    assert [b["number"] for b in status["best"]] == front
    text = searchsvc_cli(folder, "status", "front.yaml").stdout
    assert f"Pareto front: {len(front)} trials, by val_accuracy" in text

    rows = json.loads(searchsvc_cli(folder, "trials", "front.yaml", "--json").stdout)
    assert [r["number"] for r in rows if r["pareto"]] == sorted(front)
    assert len(rows) == len(trials)


def test_the_report_has_a_pareto_front_figure(ran) -> None:
    folder, _, front, _ = ran
    report = folder / "runs" / "front" / "report"
    page = (report / "index.html").read_text()
    assert (report / "pareto.png").stat().st_size > 10_000
    assert f"Pareto front: {len(front)} trials, by val_accuracy / n_params" in page
    assert "here trials " + ", ".join(str(n) for n in front) in page


def test_the_ensemble_candidates_are_the_pareto_trials(ran) -> None:
    folder, _, front, _ = ran
    done = searchsvc_cli(folder, "ensemble", "front.yaml", "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["candidates"] == front  # each Pareto trial has a stored model
    members = [m["trial"] for m in summary["members"]]
    assert members and set(members) <= set(front)
    assert summary["best_single_trial"] == front[0]  # the best first objective of the front
