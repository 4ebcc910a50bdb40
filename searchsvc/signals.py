"""Signals during a study run: SIGTERM stops a run as Ctrl-C does, Ray's and Tune's own
handlers are put back in their place, and the closing of a run is not cut short.

Signal handlers can only be set in the main thread; elsewhere these helpers do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["reassert_stop_signals", "signal_handlers_kept", "signals_held", "stop_signals"]


class _Outcome(Protocol):
    signal: str


@contextlib.contextmanager
def stop_signals(outcome: _Outcome) -> Iterator[None]:
    """SIGTERM (``docker stop``, ``kill``) stops a run as Ctrl-C does.

    It goes through whichever SIGINT handler is in force: inside ``tuner.fit`` Tune's own
    (trials stop, the experiment state is saved, ``fit`` returns), elsewhere Python's
    (``KeyboardInterrupt``). Signal handlers can only be set in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        outcome.signal = "SIGTERM"
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _sigterm_handlers.append(on_sigterm)
    try:
        yield
    finally:
        _sigterm_handlers.remove(on_sigterm)
        signal.signal(signal.SIGTERM, previous)


_sigterm_handlers: list[Any] = []


def reassert_stop_signals() -> None:
    """Put the run's SIGTERM handler back after a library replaced it.

    ``ray.init`` installs Ray's own handler in the driver, which aborts the process (exit
    -6) instead of stopping the run; the runner calls this right after it.
    """
    if _sigterm_handlers and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_handlers[-1])


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while a run closes (each step is bounded by its timeouts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put the SIGINT and SIGTERM handlers back after code that replaces them.

    ``ray.init`` and Tune's ``fit`` install their own and leave them in place (Tune restores
    SIGINT only once it has caught one), so a Ctrl-C in a later stage would be swallowed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
