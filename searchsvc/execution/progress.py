"""The run's progress, a Ray Tune callback in the driver.

On a terminal: a live display (rich) of the trials done of the budget as a bar, the counts
(complete, pruned, failed, running), the best value and its trial, the elapsed and remaining
time, and a table of the running trials (params, epoch, current value). Off a terminal (a log
file, ``--json``'s stderr, CI): one plain line per finished trial, the same counts in words.

It reads each trial's outcome from the ``OptunaSearcher`` (which Tune notifies first), so the
display, Optuna and MLflow always agree on COMPLETE / PRUNED / FAIL.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from searchsvc.inspect.status import value_text
from searchsvc.search.searcher import OptunaSearcher, TrialState
from searchsvc.search.trial_config import params_of, ticket_of
from searchsvc.study.spec import FixedParam, StudySpec

__all__ = ["ProgressCallback"]

MAX_RUNNING_ROWS = 8  # more running trials than this: the rest counted in one line
_PARAMS_WIDTH = 70  # characters of a running trial's params shown


@dataclass
class _Running:
    """A running trial as the table shows it."""

    number: int
    params: dict[str, Any]
    epoch: int = 0
    values: dict[str, float] = field(default_factory=dict)  # objective metric -> last value


class ProgressCallback(Callback):
    """Trials done of the budget, counts by state, best so far, elapsed and remaining time;
    on a terminal also the running trials (see the module doc)."""

    def __init__(
        self, spec: StudySpec, searcher: OptunaSearcher, *, done_before: int, to_run: int,
        console: Console, best_before: tuple[int, float] | None,
    ) -> None:  # fmt: skip
        self._spec = spec
        self._searcher = searcher
        self._done_before = done_before
        self._to_run = to_run
        self._console = console
        self._best = best_before
        self._started = time.monotonic()
        self._counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self._running: dict[str, _Running] = {}
        self._paused: set[str] = set()  # HyperBand's paused trials: started, not running now
        self._started_trials: dict[str, Any] = {}  # trial id -> Tune's trial, until it ends
        self._live: Live | None = None
        self._searched = {k for k, p in spec.search_space.items() if not isinstance(p, FixedParam)}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles callbacks into its experiment state; nothing to restore

    # ----------------------------------------------------------------- Tune's calls

    def setup(self, **info: Any) -> None:
        self._started = time.monotonic()
        if self._console.is_terminal:
            self._live = Live(self._view(), console=self._console, refresh_per_second=4)
            self._live.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = ticket_of(trial.config).number
        # The searched params only: the file's constants are the same in every row.
        searched = {k: v for k, v in params_of(trial.config).items() if k in self._searched}
        self._running[trial.trial_id] = _Running(number, searched)
        self._started_trials[trial.trial_id] = trial
        self._refresh(now=True)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._note_epoch(self._running.get(trial.trial_id), result)

    def _note_epoch(self, running: Any, result: dict) -> None:
        """The running trial's epoch and current values, from its latest result."""
        if running is None:
            return
        running.epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        for objective in self._spec.objectives:
            value = result.get(objective.metric)
            if isinstance(value, int | float):
                running.values[objective.metric] = float(value)
        self._refresh(now=True)  # every epoch is seen, however fast the trials are

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # The started trials only, not Tune's list of every trial: O(running) per step.
        self._paused = {i for i, t in self._started_trials.items() if t.status == "PAUSED"}
        self._refresh(now=False)  # the clock moves; the next automatic refresh shows it

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._count(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._count(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._running.clear()
            self._live.update(self._view(), refresh=True)
            self._live.stop()

    # ----------------------------------------------------------------- the state

    def _count(self, trial: Any) -> None:
        self._running.pop(trial.trial_id, None)
        self._started_trials.pop(trial.trial_id, None)
        outcome = self._searcher.outcomes.get(trial.trial_id)
        state = outcome.state if outcome else TrialState.FAIL
        self._counts[state] += 1
        if outcome and outcome.values:
            value = outcome.values[0]
            if self._best is None or self._spec.primary.better(value, self._best[1]):
                self._best = (outcome.number, value)
        if self._live is None:  # not a terminal: a plain log line per trial instead
            self._console.print(self._line())
        else:
            self._refresh(now=True)

    def _refresh(self, *, now: bool) -> None:
        if self._live is not None:
            self._live.update(self._view(), refresh=now)

    def _now_running(self) -> list[_Running]:
        return [r for trial_id, r in self._running.items() if trial_id not in self._paused]

    @property
    def _finished(self) -> int:
        return sum(self._counts.values())

    def _times(self) -> tuple[str, str]:
        """Elapsed and remaining time, as clocks (remaining "?" until a trial finished)."""
        elapsed = time.monotonic() - self._started
        remaining = "?"
        if self._finished:
            # Trials so far took elapsed/finished each at the current concurrency.
            left = max(self._to_run - self._finished, 0)
            remaining = _clock(elapsed / self._finished * left)
        return _clock(elapsed), remaining

    def _best_text(self) -> str:
        if self._best is None:
            return "-"
        return f"{self._spec.primary.metric}={self._best[1]:.4g} (trial {self._best[0]})"

    # ----------------------------------------------------------------- the views

    def _line(self) -> Text:
        """The one-line form: a finished trial's log line off a terminal."""
        elapsed, remaining = self._times()
        return Text.assemble(
            (f"{self._spec.name} ", "bold"),
            f"trials {self._done_before + self._finished}/{self._done_before + self._to_run}  ",
            *self._count_parts(),
            f"best {self._best_text()}  ",
            f"elapsed {elapsed}  eta {remaining}",
        )

    def _count_parts(self) -> list[tuple[str, str] | str]:
        return [
            (f"complete {self._counts[TrialState.COMPLETE]}  ", "green"),
            (f"pruned {self._counts[TrialState.PRUNED]}  ", "yellow"),
            (f"failed {self._counts[TrialState.FAIL]}  ", "red"),
            f"running {len(self._now_running())}  ",
        ]

    def _view(self) -> Group:
        """The terminal form: bar, counts and times, the running trials."""
        done = self._done_before + self._finished
        total = self._done_before + self._to_run
        elapsed, remaining = self._times()
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(self._spec.name, style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=40),
            Text(f"trials {done}/{total}"),
        )
        counts = Text.assemble(
            *self._count_parts(),
            f"best {self._best_text()}  elapsed {elapsed}  remaining {remaining}",
        )
        parts: list[Any] = [head, counts]
        if self._now_running():
            parts.append(self._running_table())
        return Group(*parts)

    def _running_table(self) -> Table:
        metrics = [o.metric for o in self._spec.objectives]
        table = Table(title="running trials", title_justify="left", box=None, padding=(0, 1))
        table.add_column("trial", justify="right")
        table.add_column("epoch", justify="right")
        for metric in metrics:
            table.add_column(metric, justify="right")
        table.add_column("params", no_wrap=True, overflow="ellipsis", max_width=_PARAMS_WIDTH)
        rows = sorted(self._now_running(), key=lambda r: r.number)
        for row in rows[:MAX_RUNNING_ROWS]:
            values = [_value(row.values.get(m)) for m in metrics]
            shown = ", ".join(f"{k}={_param(v)}" for k, v in row.params.items())
            epoch = f"{row.epoch}/{self._spec.budget.max_epochs}" if row.epoch else "-"
            table.add_row(str(row.number), epoch, *values, shown)
        if len(rows) > MAX_RUNNING_ROWS:
            table.add_row("", "", *[""] * len(metrics), f"... and {len(rows) - MAX_RUNNING_ROWS}")
        return table


def _value(value: float | None) -> str:
    return "-" if value is None else value_text(value)


def _param(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
