"""The processes of one local Ray session, found and stopped: what a killed driver leaves.

A driver killed with SIGKILL cannot stop the local Ray it started; some of its processes (the
dashboard and runtime-env agents, idle workers) outlive it. They are found by their session,
never by name (another Ray cluster on the host, such as a multi-node test's, must be left
alone): a process belongs to session folder ``S`` when its command line names ``S`` or one of
its open files lies in ``S``. Linux only (``/proc``); elsewhere nothing is found.

Hand-written because neither Ray nor psutil (not a dependency) offers "the processes of this
session".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

__all__ = ["session_processes", "stop_session"]

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


def session_processes(session_dir: str) -> list[int]:
    """The pids (other than this process) of the processes of Ray session ``session_dir``."""
    if not session_dir or not _PROC.is_dir():
        return []
    found = []
    for entry in _PROC.iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != os.getpid()
            and _belongs(entry, session_dir)
        ):
            found.append(int(entry.name))
    return sorted(found)


def _belongs(proc: Path, session_dir: str) -> bool:
    try:
        if session_dir.encode() in (proc / "cmdline").read_bytes():
            return True
        for fd in (proc / "fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(session_dir):
                    return True
    except OSError:  # gone, or not ours to look at
        return False
    return False


def stop_session(session_dir: str, *, grace_s: float = 3.0) -> int:
    """SIGTERM every process of the session, SIGKILL those left after ``grace_s``; how many."""
    pids = session_processes(session_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and session_processes(session_dir):
        time.sleep(0.1)
    for pid in session_processes(session_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        logger.info("stopped %d leftover process(es) of Ray session %s", len(pids), session_dir)
    return len(pids)
