"""``--set`` from the command line: a bad override is one line and exit 2; the resume hint of
a failed run repeats every option, ``--set`` and ``--data-dir`` included."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from searchsvc.search.claim import StudyClaim
from tests.helpers import base_study, searchsvc_cli


def test_bad_override_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(base_study()))

    done = searchsvc_cli(tmp_path, "run", "study.yaml", "--set", "budget.n_trials=0")

    assert done.returncode == 2
    assert done.stderr == (
        "error: --set budget.n_trials: budget -> n_trials: Input should be greater than or "
        "equal to 1\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_validate_shows_the_overridden_study(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(base_study()))

    done = searchsvc_cli(tmp_path, "validate", "study.yaml", "--set", "budget.n_trials=3",
                      "--set", "name=other")  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "study 'other'" in done.stdout and "3 trials x <= 2 epochs" in done.stdout


def test_failed_run_resume_hint_repeats_every_option(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(base_study(name="busy")))
    (tmp_path / "data").mkdir()
    storage = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    # Another live driver (this test's process) holds the study: the run stops with exit 1.
    optuna.create_study(study_name="busy", storage=storage)
    held = StudyClaim.acquire(storage, "busy")
    try:
        done = searchsvc_cli(
            tmp_path, "run", "study.yaml", "--storage", storage, "--data-dir", "data",
            "--set", "budget.n_trials=2", "--set", "seed=3", "--no-ensemble",
        )  # fmt: skip
    finally:
        held.release()

    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"finished trials are kept; resume with: searchsvc run study.yaml --storage {storage} "
        "--data-dir data --no-ensemble --set budget.n_trials=2 --set seed=3"
    )
