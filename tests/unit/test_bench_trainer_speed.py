"""Smoke test of ``bench/trainer_speed.py``: on a tiny budget it runs and prints every field.

The benchmark's figures are for a quiet machine; this only checks that each line is there,
once, in order, with a number where one belongs (about 5 s: a real MNIST load and fit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

TINY = ["--samples", "2048", "--val-samples", "1024", "--epochs", "2", "--repeats", "1"]

# Every line the benchmark prints, in order: its label, then a pattern for what follows.
NUMBER = r"[0-9][0-9,]*(\.[0-9]+)?"
FIELDS = [
    ("torch ", r".+, 1 thread, CPU capability \w+, compile off"),
    ("MNIST load: ", rf"{NUMBER} s \(2048 train, 1024 val, 2048 train-accuracy subset\)"),
    ("once per process: torch._dynamo import ", rf"{NUMBER} s .+"),
    ("epochs (s, whole, report to report): ", rf"{NUMBER}, {NUMBER}; fastest warm: epoch 2"),
    ("samples/s (whole warm epoch): ", NUMBER),
    ("epoch seconds: ", rf"{NUMBER} \(CPU {NUMBER}: .+\)"),
    ("  training pass: ", rf"{NUMBER} s \({NUMBER}%\), 16 batches; its GEMMs .+% of it"),
    ("  validation pass: ", rf"{NUMBER} s \({NUMBER}%\), 1 batches; its GEMMs .+% of it"),
    ("  train-accuracy pass: ", rf"{NUMBER} s \({NUMBER}%\), 1 batches; its GEMMs .+% of it"),
    ("  everything else: ", rf"-?{NUMBER} s \(-?{NUMBER}%\)"),
    ("training step: ", rf"{NUMBER} ms = GEMMs {NUMBER} \(alone\) \+ optimiser {NUMBER} .+"),
    ("first epoch: ", rf"{NUMBER} s \([+-]{NUMBER} s over a warm epoch: .+\)"),
    ("val_accuracy after the last epoch: ", NUMBER),
    ("GEMM rate (torch.mm on the epoch's GEMMs, same run): ", rf"{NUMBER} GFLOP/s"),
    (
        "strict count: ",
        rf"{NUMBER} GFLOP per epoch, {NUMBER} GFLOP/s = {NUMBER}% of the GEMM rate "
        rf"\({NUMBER}% on the epoch's CPU time\)",
    ),
]


def test_the_trainer_speed_bench_prints_every_field(data_dir: Path) -> None:
    env = {**os.environ, "SEARCHSVC_DATA_DIR": str(data_dir)}
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "trainer_speed.py"), *TINY],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    labels = [label for label, _ in FIELDS]
    assert [
        next((lab for lab in labels if line.startswith(lab)), line) for line in lines
    ] == labels
    for line, (label, rest) in zip(lines, FIELDS, strict=True):
        assert re.fullmatch(re.escape(label) + rest, line), line
    share = float(lines[-1].split("= ")[1].split("%")[0])
    assert 0 < share < 200  # a share of the same run's GEMM rate, not a unit slip
