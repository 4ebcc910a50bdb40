"""One driver per study: the claim is a row only one driver can hold, renewed on its own timer.

The race tests put a pause between reading the holder and writing the claim (the window a
read-then-write claim loses), start two drivers behind a barrier, and check exactly one holds
the study; on SQLite here and on a real PostgreSQL (slow).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from searchsvc.errors import StudyBusyError
from searchsvc.search import claim as claims
from searchsvc.search.claim import Holder, StudyClaim, holder_of
from tests.servers import postgres_server


def _race(storage: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[StudyClaim], list[str]]:
    """Two drivers claim ``race`` at once, both pausing between their check and their write."""
    barrier = threading.Barrier(2, timeout=30)
    monkeypatch.setattr(claims, "_between_check_and_write", lambda: barrier.wait())
    won: list[StudyClaim] = []
    refused: list[str] = []
    crashed: list[BaseException] = []

    def driver() -> None:
        try:
            won.append(StudyClaim.acquire(storage, "race"))
        except StudyBusyError as exc:
            refused.append(str(exc))
        except BaseException as exc:  # anything else is a defect: say it, do not lose it
            crashed.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert crashed == []
    return won, refused


def _assert_exactly_one_runs(storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # First both see a free study; then both see the winner's row as a dead holder's.
    for _ in range(2):
        won, refused = _race(storage, monkeypatch)
        assert (len(won), len(refused)) == (1, 1), (won, refused)
        assert refused[0].startswith("study 'race' ")
        assert holder_of(storage, "race") == won[0].holder
        _make_dead(storage, won[0])


def _make_dead(storage: str, held: StudyClaim) -> None:
    """Stop the claim's timer and move its row to a host that stopped beating long ago."""
    held._stop.set()
    engine = sa.create_engine(storage)
    with engine.begin() as connection:
        connection.execute(
            claims._DRIVERS.update().values(host="gone-node", heartbeat=time.time() - 3600)
        )
    engine.dispose()


def test_two_drivers_at_once_on_sqlite_exactly_one_runs(tmp_path, monkeypatch):
    _assert_exactly_one_runs(f"sqlite:///{tmp_path / 'optuna.db'}", monkeypatch)


@pytest.mark.slow
def test_two_drivers_at_once_on_postgresql_exactly_one_runs(monkeypatch):
    with postgres_server() as base:
        _assert_exactly_one_runs(f"{base}/optuna", monkeypatch)


def test_a_second_driver_is_refused_while_the_first_lives_and_takes_over_once_it_is_gone(
    tmp_path,
):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    code = (
        "import sys, time; from searchsvc.search.claim import StudyClaim; "
        f"StudyClaim.acquire({storage!r}, 's'); print('held', flush=True); time.sleep(60)"
    )
    first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "held\n"
        with pytest.raises(StudyBusyError) as caught:
            StudyClaim.acquire(storage, "s")
        assert str(caught.value) == (
            f"study 's' is being run by another driver (pid {first.pid} on "
            f"{socket.gethostname()}, heartbeat 0 s ago); wait for it to end or stop it"
        )
    finally:
        first.kill()  # as SIGKILL leaves it: the row stays, its process is gone
        first.wait()
    taken = StudyClaim.acquire(storage, "s")
    assert holder_of(storage, "s") == taken.holder
    taken.release()
    assert holder_of(storage, "s") is None


def test_a_driver_on_another_host_holds_the_study_until_its_heartbeat_is_stale(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    held = StudyClaim.acquire(storage, "s")
    _make_dead(storage, held)  # another host, last beat an hour ago
    with pytest.raises(StudyBusyError, match="gone-node"):
        StudyClaim.acquire(storage, "s", stale_after_s=7200)
    again = StudyClaim.acquire(storage, "s", stale_after_s=60)
    assert holder_of(storage, "s") == again.holder
    again.release()


def test_the_heartbeat_runs_on_its_own_timer(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    held = StudyClaim.acquire(storage, "s", heartbeat_every_s=0.05)
    first = holder_of(storage, "s").heartbeat
    deadline = time.monotonic() + 10
    while holder_of(storage, "s").heartbeat == first:  # nothing else calls beat()
        assert time.monotonic() < deadline, "no heartbeat from the timer"
        time.sleep(0.05)
    held.release()
    assert holder_of(storage, "s") is None
    assert isinstance(held.holder, Holder) and Path(tmp_path / "optuna.db").exists()
