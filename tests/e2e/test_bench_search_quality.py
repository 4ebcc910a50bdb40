"""Smoke test of ``bench/search_quality.py`` (tiny data and budget, one seed): it runs all three
arms, prints every configuration field and table row, and writes each arm's raw JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ARMS = ("service-tpe", "service-random", "stock")
BUDGET_S = 20
CONFIG = ("seeds", "trainer", "data", "search space", "constants", "concurrency", "path",
          "sampler", "scheduler", "budget", "early-stopped trials")  # fmt: skip
ROWS = (
    "seeds",
    *(f"best val_accuracy at {p}% ({p * BUDGET_S / 100:g} s)" for p in (25, 50, 75, 100)),
    "best epoch seen by the budget, any state",
    "trials finished by the budget",
    "chosen trial val_accuracy",
    "chosen model test accuracy",
    "arm wall time (s)",
)
# "-" (no value yet) or "mean ± std (min-max)", std "n/a" for one seed
CELL = re.compile(
    r"(?<!\S)(?:-|[\d.]+ ± (?:n/a|[\d.]+) \([\d.]+-[\d.]+\)(?: \[\d+/\d+ seeds\])?)(?!\S)"
)
RAW = {"arm", "seed", "settings", "configuration", "wall_s", "t0", "states", "trials", "best_at",
       "finished_by_budget", "best_epoch_seen", "chosen"}  # fmt: skip


def _configuration(out: str, arm: str) -> dict[str, str]:
    """The ``key: value`` lines printed under ``== configuration: <arm> ==``."""
    block = out.split(f"== configuration: {arm} ==\n", 1)[1].split("\n==", 1)[0]
    return dict(line.strip().split(": ", 1) for line in block.strip().splitlines())


def test_search_quality_smoke(tmp_path: Path, data_dir: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "search_quality.py"), "--smoke", "--budget-s",
         str(BUDGET_S), "--seeds", "0", "--results", str(tmp_path / "raw")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "SEARCHSVC_DATA_DIR": str(data_dir)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = proc.stdout
    for arm in ARMS:
        config = _configuration(out, arm)
        wanted = CONFIG + (("added to the stock wiring",) if arm == "stock" else ())
        assert set(wanted) <= set(config), (arm, sorted(set(wanted) - set(config)))
        assert all(config[key] for key in wanted), config
    table = out.split(f"== search quality: {BUDGET_S} s budget, 1 seed(s) ==\n", 1)[1]
    lines = table.splitlines()
    assert lines[0].split() == list(ARMS), lines[0]
    assert next(line for line in lines if line.startswith("seeds  ")).split() == [
        "seeds",
        "0",
        "0",
        "0",
    ]
    for label in ROWS[1:]:
        row = next((line for line in lines if line.startswith(label + "  ")), None)
        assert row is not None, f"row {label!r} missing from:\n{table}"
        assert len(CELL.findall(row[len(label) :])) == len(ARMS), row  # one cell per arm
    for arm in ARMS:
        raw = json.loads((tmp_path / "raw" / f"{arm}-seed0.json").read_text())
        assert RAW <= set(raw), sorted(RAW - set(raw))
        assert set(raw["best_at"]) == {"0.25", "0.5", "0.75", "1.0"}
        assert raw["trials"] and {"number", "state", "value", "finished_s"} <= set(
            raw["trials"][0]
        )
        chosen = raw["chosen"]
        if chosen["number"] is None:  # no COMPLETE trial in the budget (a very busy machine)
            continue
        assert 0.0 < chosen["test_accuracy"] <= 1.0
        if arm == "stock":  # the retrained network is the trial's own, to the last bit
            assert chosen["reproduced"], chosen
        else:  # the weights MLflow keeps score what Optuna recorded
            assert chosen["stored_val_accuracy"] == pytest.approx(chosen["value"], abs=2e-3)
    print(f"smoke run: {time.monotonic() - started:.0f} s")
