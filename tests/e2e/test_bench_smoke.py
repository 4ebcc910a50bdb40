"""The benchmarks run and print every figure (tiny budgets; the figures themselves are
measured by running the scripts as the README says, never asserted here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(\.\d+)?"
SCORED = r"trial \d+ at \d+ s: [01]\.\d{4}"


def _bench(*args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_overhead_prints_the_slope_the_first_trial_and_the_accounting():
    lines = _bench("bench/overhead.py", "--repeats", "1", "--short", "2", "--long", "3",
                   "--trainers", "tiny", "--concurrency", "2")  # fmt: skip
    expected = [
        "setup: TPE \\+ ASHA, MLflow and Optuna on embedded SQLite, 2 CPUs split over the "
        "concurrent trials; studies of 2 and 3 trials, each a fresh process",
        f"tiny trainer's own fit time per trial \\(in-process, one thread, warm\\): {NUMBER} s",
        f"\\[tiny, 2 concurrent\\] 2 trials: {NUMBER} s; 3 trials: {NUMBER} s \\(medians of 1; "
        f"3-trial runs {NUMBER} s\\)",
        f"\\[tiny, 2 concurrent\\] per-trial overhead: -?{NUMBER} s \\(target <= 0.15 s\\) "
        f"(OK|OVER TARGET) \\(slope -?{NUMBER} s less training {NUMBER} s\\)",
        f"\\[tiny, 2 concurrent\\] command to first trial running: {NUMBER} s \\(median of 2 "
        "runs\\)",
        "\\[tiny, 2 concurrent\\] accounted for \\(3 trials\\): Optuna \\{.*\\}; MLflow child "
        "runs 3 \\{.*\\}",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)


def test_time_to_good_model_prints_each_seed_and_the_median(data_dir):
    lines = _bench(
        "bench/time_to_good_model.py", "--seeds", "0", "--target", "0.5", "--max-s", "240",
        "--set", f"dataset.data_dir={data_dir}", "--set", "dataset.train_subset=2000",
        "--set", "budget.max_epochs=2", "--set", "budget.n_trials=2",
        "--set", "search_space.width_1.high=300",
    )  # fmt: skip
    expected = [
        "study: mnist.yaml \\(seeds \\[0\\]\\); target: test accuracy >= 0.500 of a finished "
        "trial's stored weights",
        f"seed 0: finished trials scored: {SCORED}(, {SCORED})*",
        f"seed 0: time to target: {NUMBER} s \\(trial \\d+, test accuracy 0\\.\\d{{4}}\\)",
        f"time to target, median of 1 seed\\(s\\) that reached it \\(1 run\\): {NUMBER} s "
        f"\\(each: {NUMBER}\\)",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)


def test_precision_speed_prints_each_arm_and_the_ratio(data_dir):
    lines = _bench("bench/precision_speed.py", "--epochs", "2", "--samples", "2000",
                   "--data-dir", str(data_dir))  # fmt: skip
    arm = (
        f"epochs 2-2 median {NUMBER} s \\(min {NUMBER}, max {NUMBER}\\), last {NUMBER} s; "
        f"\\d+ training images/s; validation accuracy [01]\\.\\d{{4}}"
    )
    expected = [
        "network: 784-1024-1024-10 ReLU, dropout 0.2 / 0.5, max-norm 3, Adam, batch 128; "
        "2000 training images, one thread, 2 epochs per arm",
        f"float32: {arm}",
        f"bfloat16: {arm}",
        f"float32, no flush: {arm}",
        f"bfloat16 / float32, median epoch: {NUMBER}x",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
