"""After the search, the best configurations trained again from new seeds
(``ensemble: {reseed: N}``), as further ensemble candidates: the best N configurations once
each or, when fewer completed (ASHA prunes most trials of a short study), the best ones again
with further seeds, in turn.

Networks of one configuration trained from different seeds disagree where each is unsure, so
their average removes much of a single network's error (Lakshminarayanan et al. 2017); the
search alone gives the ensemble near-copies of its best configuration at one seed each. A
reseed is not an Optuna trial: the sampler's history and ``n_trials`` stay the search's. It is
an MLflow child run of its own (``searchsvc.ensemble.retrain_runs``). The study's time budget
covers the reseeds: none starts after it runs out, and a running one stops at its epoch's end
and is not a candidate. A run of a study whose reseeds are already in MLflow reseeds only the
best configurations that have none yet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from searchsvc import keys
from searchsvc.ensemble.candidates import ranked_trials
from searchsvc.ensemble.retrain_runs import log_retrain_run, reseed_sources
from searchsvc.errors import first_line
from searchsvc.execution.retrain import run_on_ray
from searchsvc.retraining import RetrainJob, RetrainResult, reseed_seed
from searchsvc.search.space import trained_params

if TYPE_CHECKING:
    import optuna

    from searchsvc.study.spec import StudySpec
    from searchsvc.study_run import StudyRun

__all__ = ["ReseedOutcome", "reseed_best"]

logger = logging.getLogger(__name__)


@dataclass
class ReseedOutcome:
    """What the reseed stage did.

    Attributes:
        trials: the trials whose configurations are reseeded (best first).
        kept: reseeds an earlier run of the study had finished (not run again).
        finished, out_of_time, not_started: jobs of this run by how they ended.
        failed: ``"<label>: <why>"`` for each job that failed.
        seconds: the stage's wall time.
    """

    trials: list[int] = field(default_factory=list)
    kept: int = 0
    finished: int = 0
    out_of_time: int = 0
    not_started: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the terminal."""
        parts = [f"{self.finished} finished"]
        parts += [f"{self.kept} kept from an earlier run"] * bool(self.kept)
        if self.out_of_time or self.not_started:
            parts.append(f"{self.out_of_time + self.not_started} cut by the time budget")
        parts += [f"{len(self.failed)} failed ({'; '.join(self.failed)})"] * bool(self.failed)
        return f"reseeds of trials {self.trials}: {', '.join(parts)} in {self.seconds:.0f} s"


def reseed_plan(ranked: list[optuna.trial.FrozenTrial], n: int) -> list[tuple[int, int]]:
    """``n`` reseeds as ``(index into ranked, reseed number)``: the best ``n`` configurations
    once each, or, when fewer completed, the best ones again with further seeds in turn."""
    if not ranked:
        return []
    return [(i % len(ranked), i // len(ranked) + 1) for i in range(n)]


def planned_reseeds(
    study: optuna.Study, spec: StudySpec
) -> tuple[list[optuna.trial.FrozenTrial], list[tuple[optuna.trial.FrozenTrial, int]]]:
    """The trials to reseed (best first) and the ``(trial, reseed number)`` pairs planned
    (:func:`reseed_plan`): what the stage runs and the ensemble build reads, no more."""
    ranked = ranked_trials(study, spec)[: spec.ensemble.reseed]
    return ranked, [(ranked[p], k) for p, k in reseed_plan(ranked, spec.ensemble.reseed)]


def reseed_jobs(run: StudyRun) -> tuple[list[optuna.trial.FrozenTrial], list[RetrainJob], int]:
    """The trials to reseed (best first), the jobs still to run for them, and how many of
    the planned reseeds an earlier run finished."""
    spec = run.spec
    ranked, plan = planned_reseeds(run.study, spec)
    pairs = [(trial.number, index) for trial, index in plan]
    done = {(s.number, s.reseed) for s in reseed_sources(run.tracker, pairs)}
    jobs = [
        # The trial's fixed params too: Optuna's params are only the sampled ones.
        RetrainJob("reseed", trial.number, index, trained_params(trial.params, spec.search_space),
                   reseed_seed(_trial_seed(spec, trial), index))
        for trial, index in plan
        if (trial.number, index) not in done
    ]  # fmt: skip
    return ranked, jobs, len(plan) - len(jobs)


def reseed_best(run: StudyRun, deadline: float | None) -> ReseedOutcome:
    """Reseed the study's best configurations on Ray; each result goes to MLflow as it
    comes in.

    Args:
        deadline: the time budget's end, wall clock (``time.time()``); None for none.
    """
    started = time.monotonic()
    best, jobs, kept = reseed_jobs(run)
    outcome = ReseedOutcome(trials=[t.number for t in best], kept=kept)
    data = run.data
    shape = {"n_features": data.n_features, "n_classes": data.n_classes}

    def record(result: RetrainResult) -> None:
        try:
            log_retrain_run(run.tracker, run.spec, result, shape)
        except Exception as exc:  # MLflow refused it: this reseed is lost, not the others
            result.status = "failed"
            result.reason = f"not stored in MLflow: {type(exc).__name__}: {first_line(exc)}"
        if result.status == "failed":
            logger.warning("%s failed: %s", result.job.label, result.reason)
            outcome.failed.append(f"{result.job.label}: {result.reason}")
        else:
            setattr(outcome, result.status, getattr(outcome, result.status) + 1)

    run_on_ray(run, jobs, data.without_test(), deadline=deadline, on_result=record)
    outcome.seconds = time.monotonic() - started
    return outcome


def _trial_seed(spec: StudySpec, trial: optuna.trial.FrozenTrial) -> int:
    """The seed a trial trained from: the study's seed plus its chain's first trial number."""
    return spec.seed + int(trial.user_attrs.get(keys.SEED_OF, trial.number))
