"""The time budget, for real: when it runs out, no trial starts and the running ones stop at an
epoch's end, PRUNED with the epochs they reported (never FAIL, no successor queued); the CLI
says how many of the budgeted trials finished, and `--strict-budget` makes that exit 3."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import optuna
import pytest
import yaml

from searchsvc.search.claim import holder_of
from tests.helpers import env_with_test_trainers

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_spent_time_budget_prunes_the_running_trials_and_strict_budget_exits_3(tmp_path):
    study = {
        "name": "budget",
        "trainer": "step_trainer:trainer",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
        "sampler": "random",
        "scheduler": "none",
        # Trials of 20 epochs of 1 s, two at a time, in a budget of 6 s: none can finish.
        "budget": {"n_trials": 6, "max_epochs": 20, "max_concurrent_trials": 2,
                   "time_budget_s": 6},
        "ensemble": {"enabled": False},
        "workdir": str(tmp_path / "w"),
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    env = env_with_test_trainers(STEP_EPOCH_S="1")
    done = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", "study.yaml", "--strict-budget"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    trials = optuna.load_study(study_name="budget", storage=storage).trials
    states = Counter(t.state for t in trials)
    assert set(states) == {optuna.trial.TrialState.PRUNED}, states
    assert 1 <= len(trials) <= 2, "no trial started after the budget ran out"
    for trial in trials:
        epochs = trial.user_attrs["epochs"]
        assert trial.user_attrs["reason"] == f"stopped by the time budget at epoch {epochs}"
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
    assert done.returncode == 3, done.stderr[-3000:]
    n = len(trials)
    assert done.stderr.splitlines()[-2:] == [
        f"time budget of 6 s ran out: {n} of 6 trials finished; continue with: searchsvc run "
        "study.yaml --strict-budget",
        f"error: --strict-budget: {n} of 6 trials finished",
    ]
    assert holder_of(storage, "budget") is None, "the claim is released"
