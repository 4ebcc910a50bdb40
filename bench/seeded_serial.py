"""Fingerprint of the pipeline: a seeded study run one trial at a time, compared exactly.

Runs ``searchsvc run bench/studies/seeded_serial.yaml`` (through the CLI, as a user would) in
a temporary folder, then reads every trial back from Optuna storage: number, state, params,
value and every epoch's value. With one trial at a time and a fixed seed, the same code gives
the same numbers bit for bit on the same machine, so a refactor that changes what is sampled
or trained shows up here.

Usage:
    python bench/seeded_serial.py                      # print the fingerprint as JSON
    python bench/seeded_serial.py --write FILE         # ... and record it
    python bench/seeded_serial.py --compare FILE       # exit 1 unless equal to FILE

The recorded ``bench/seeded_serial.expected.json`` was made on this project's 2-core CPU
machine; other BLAS builds may differ in the last bits, so compare on the machine that wrote it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
STUDY = HERE / "studies" / "seeded_serial.yaml"


def fingerprint(workdir: Path) -> list[dict]:
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    study = optuna.load_study(study_name="seeded-serial", storage=storage)
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "epochs": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        }
        for t in study.get_trials(deepcopy=False)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="searchsvc-seeded-") as tmp:
        workdir = Path(tmp) / "work"
        started = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "searchsvc", "run", str(STUDY), "--workdir", str(workdir)],
            capture_output=True, text=True, cwd=tmp,
        )  # fmt: skip
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            return run.returncode
        trials = fingerprint(workdir)
        elapsed = time.perf_counter() - started
    text = json.dumps(trials, indent=1, sort_keys=True)
    print(text)
    print(f"# {len(trials)} trials in {elapsed:.0f} s", file=sys.stderr)
    if args.write:
        args.write.write_text(text + "\n")
    if args.compare:
        expected = json.loads(args.compare.read_text())
        if expected != trials:
            print(f"DIFFERENT from {args.compare}", file=sys.stderr)
            return 1
        print(f"identical to {args.compare}: {len(trials)} trials", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
