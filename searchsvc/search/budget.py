"""The search's time budget (``budget.time_budget_s``): when it runs out, no trial starts and
each running trial stops at the end of its current epoch, recorded PRUNED with the epochs it
reported (never FAIL, never a successor queued), so the next ``searchsvc run`` goes on from a
clean study. The searcher asks it before starting a trial; the execution stage's stopper asks
it after every epoch."""

from __future__ import annotations

import time

__all__ = ["TimeBudget"]


class TimeBudget:
    """A deadline counted from :meth:`start`, and the trials it stopped.

    Attributes:
        seconds: the budget, or None for none.
        stopped: the ids of the trials it stopped mid-way.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.stopped: set[str] = set()
        self._deadline: float | None = None

    def start(self) -> None:
        """Start counting (when the search starts, not when the run was prepared)."""
        if self.seconds is not None:
            self._deadline = time.monotonic() + self.seconds

    @property
    def started(self) -> bool:
        return self._deadline is not None or self.seconds is None

    def wall_deadline(self) -> float | None:
        """The deadline as wall-clock time (``time.time()``), for other processes; None for
        no budget."""
        if self._deadline is None:
            return None
        return time.time() + (self._deadline - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._deadline is not None and time.monotonic() >= self._deadline
