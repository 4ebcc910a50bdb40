"""TPE with a bounded history: the study file's ``sampler: {name: tpe, max_history: N}``.

Why: Optuna's TPE reads and models every finished trial on every ask (the search space, the
split into good and bad trials, both Parzen estimators), so an ask costs more the longer the
study; in a 2,000-trial study of instant trials the driver's time per trial grew 1.3x from
trials 100-199 to 1,800-1,899, all of it in the sampler. Bounded, TPE sees:

- every RUNNING trial (the constant liar's), and
- the 25 best COMPLETE trials by value, and
- the ``max_history`` most recent other finished trials, for the "bad" density, which TPE's
  default weights already tilt towards the recent ones.

What it changes (so it is off by default): the bad density forgets old trials. TPE sizes its
"good" set from the trials it sees (``default_gamma``: ceil(0.1 n), at most 25), so it is the
same 25 best as with the whole history only from ``max_history`` 225 on; below, it is the best
ceil(0.1 (max_history + 25)) (13 with 100). With fewer than 25 COMPLETE trials TPE fills its
good set with the best PRUNED ones, and only recent PRUNED trials are kept. ``n_startup_trials``
above ``max_history`` + 25 would keep sampling at random. What it bounds is TPE's modelling;
Optuna still reads every trial (the constant liar reads them uncached) and this filter is one
pass over them. One objective only (the spec refuses it with several: "best" is by value).
"""

from __future__ import annotations

import heapq
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BoundedHistoryTPESampler", "bounded_history"]

GOOD = 25  # TPE's default gamma: min(ceil(0.1 * n), 25) trials count as good


def bounded_history(trials: list[FrozenTrial], keep: int, *, maximize: bool) -> list[FrozenTrial]:
    """``trials`` cut down as the module doc says, in trial-number order."""
    finished = [t for t in trials if t.state.is_finished()]
    if len(finished) <= keep + GOOD:
        return trials
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    pick = heapq.nlargest if maximize else heapq.nsmallest
    best = {t.number for t in pick(GOOD, complete, key=lambda t: t.value)}
    others = [t for t in finished if t.number not in best]
    kept = best | {t.number for t in others[-keep:]}
    return [t for t in trials if t.number in kept or not t.state.is_finished()]


class _BoundedStudy:
    """The study as the sampler sees it: every attribute the study's own, except that its
    trials are the bounded history."""

    def __init__(self, study: optuna.Study, keep: int) -> None:
        self._study = study
        self._keep = keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        maximize = self._study.direction == optuna.study.StudyDirection.MAXIMIZE
        return bounded_history(trials, self._keep, maximize=maximize)


class BoundedHistoryTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler fed the bounded history (see the module doc)."""

    def __init__(self, *, max_history: int, **options: Any) -> None:
        super().__init__(**options)
        self._max_history = max_history

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        return super().infer_relative_search_space(self._bounded(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: Any) -> Any:
        return super().sample_relative(self._bounded(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return super().sample_independent(
            self._bounded(study), trial, param_name, param_distribution
        )

    def _bounded(self, study: optuna.Study) -> Any:
        return _BoundedStudy(study, self._max_history)
