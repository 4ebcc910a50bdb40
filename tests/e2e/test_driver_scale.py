"""The driver over a few hundred trials: nothing is lost, and its store round trips per trial
do not grow with the study (``bench/driver_scale.py`` at a small size; its timings are never
asserted here, only counts).

The study is the benchmark's: the no-op trainer, TPE + ASHA, 8 concurrent trials, MLflow and
Optuna on embedded SQLite, about 90 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

N_TRIALS = 300
# The mix of pruned and completed trials moves the counts per trial by a few percent from one
# hundred to the next (a pruned trial reports fewer epochs); a read or write per trial that
# grows with the study adds far more by trial 300.
SLACK = 1.05


def test_a_few_hundred_trials_lose_nothing_and_cost_no_more_round_trips_at_the_end(
    tmp_path: Path,
) -> None:
    figures_file = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "driver_scale.py"), "--trials", str(N_TRIALS),
         "--json", str(figures_file), "--workdir", str(tmp_path / "study")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert figures["trials"] == N_TRIALS
    assert figures["agree"], figures["accounted"]
    first, last = figures["windows"][0], figures["windows"][-1]
    assert (first["trials"], last["trials"]) == ("0-99", "200-299")
    counts = first["round_trips_per_trial"]
    assert {"optuna_sql_statements", "mlflow_sql_statements", "mlflow_client_calls"} <= set(counts)
    grown = {
        key: (value, last["round_trips_per_trial"][key])
        for key, value in counts.items()
        if last["round_trips_per_trial"][key] > SLACK * value
    }
    assert grown == {}, f"round trips per trial, trials 0-99 -> 200-299: {grown}"
