"""``searchsvc run`` on a terminal: a real run in a pseudo-terminal (Python's ``pty``), its
screen captured, every field of the live display found in it. The study's first trial is
an ``enqueue:`` entry, so the same run shows the entry tried first, through Ray."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import base_study, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
ENTRY = {"lr": 0.01, "n_layers": 2, "width_2": 16, "optimizer": "adam"}


def _run_in_terminal(folder: Path, *arguments: str, timeout: float = 180) -> tuple[int, str]:
    """Run ``python -m searchsvc ARGUMENTS`` with a 160 x 50 pseudo-terminal as its stdin,
    stdout and stderr; its exit code and everything it wrote there, escapes removed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in clean_env().items() if not k.startswith(("TTY_", "NO_COLOR"))}
    env.update(TERM="xterm-256color", PYTHONWARNINGS="ignore")
    process = subprocess.Popen(
        [sys.executable, "-m", "searchsvc", *arguments], cwd=folder, env=env,
        stdin=follower, stdout=follower, stderr=follower, start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = process.wait(timeout=30)
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_a_run_on_a_terminal_shows_every_field_of_the_live_display(tmp_path) -> None:
    study = base_study(
        name="live", enqueue=[ENTRY], scheduler="none", ensemble={"enabled": False},
        budget={"n_trials": 4, "max_epochs": 3, "max_concurrent_trials": 2},
    )  # fmt: skip
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(study, sort_keys=False))

    code, screen = _run_in_terminal(tmp_path, "run", "live.yaml")

    assert code == 0, screen[-3000:]
    assert "━" in screen  # the bar (rich draws it with this character)
    assert "trials 4/4" in screen  # trials done of the budget, at the end
    assert re.search(r"complete \d  pruned \d  failed 0  running [0-2]", screen)
    assert re.search(r"best val_loss=[0-9.]+ \(trial \d\)", screen)
    assert re.search(r"elapsed \d+:\d\d  remaining (\d+:\d\d|\?)", screen)
    # The running trials' table: its header, and a row with params, epoch and current value.
    assert re.search(r"trial +epoch +val_loss +params", screen)
    row = re.search(r"\s0 +([123])/3 +([0-9.]+) +lr=0\.01, n_layers=2, width_2=16", screen)
    assert row is not None, screen[-3000:]
    study_db = f"sqlite:///{tmp_path / 'runs' / 'live' / 'optuna.db'}"
    first = optuna.load_study(study_name="live", storage=study_db).trials[0]
    assert first.params == ENTRY  # the enqueued entry was the first trial
