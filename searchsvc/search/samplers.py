"""Build the seeded Optuna sampler a study names."""

from __future__ import annotations

import optuna

from searchsvc.search.bounded_tpe import BoundedHistoryTPESampler
from searchsvc.study.options import (
    CmaEsSamplerSpec,
    GPSamplerSpec,
    GridSamplerSpec,
    NSGA2SamplerSpec,
    QMCSamplerSpec,
    RandomSamplerSpec,
    TPESamplerSpec,
)
from searchsvc.study.spec import StudySpec

__all__ = ["build_sampler"]


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: the stock one calls ``study.stop()`` once the grid is used up,
    which raises outside ``study.optimize`` and leaves the last trial RUNNING. Our budget is
    capped to the grid size instead, so there is nothing to stop."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001
        return None


def build_sampler(spec: StudySpec, *, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of ``spec.sampler``, seeded with ``seed``.

    The caller varies ``seed`` when it resumes a stored study, so that a resumed seeded sampler
    does not replay the same start-up points (optuna#3255).
    """
    options = spec.sampler
    match options:
        case TPESamplerSpec():
            multi = len(spec.objectives) > 1
            tpe = {
                "n_startup_trials": options.n_startup_trials,
                "multivariate": options.multivariate,
                # group needs multivariate; it keeps conditional params in their own groups.
                "group": options.group and options.multivariate and not multi,
                "constant_liar": options.constant_liar,
                "seed": seed,
            }
            if options.max_history is not None:
                return BoundedHistoryTPESampler(max_history=options.max_history, **tpe)
            return optuna.samplers.TPESampler(**tpe)
        case RandomSamplerSpec():
            return optuna.samplers.RandomSampler(seed=seed)
        case GPSamplerSpec():
            return optuna.samplers.GPSampler(n_startup_trials=options.n_startup_trials, seed=seed)
        case QMCSamplerSpec():
            return optuna.samplers.QMCSampler(
                qmc_type=options.qmc_type, scramble=options.scramble, seed=seed
            )
        case CmaEsSamplerSpec():
            return optuna.samplers.CmaEsSampler(
                n_startup_trials=options.n_startup_trials,
                restart_strategy=options.restart_strategy,
                seed=seed,
            )
        case GridSamplerSpec():
            return _AskTellGridSampler(spec.grid(), seed=seed)
        case NSGA2SamplerSpec():
            return optuna.samplers.NSGAIISampler(
                population_size=options.population_size, seed=seed
            )
    raise AssertionError(f"unhandled sampler {options!r}")  # the schema admits no other
