"""The study file's ``sampler:`` and ``scheduler:`` sections: one model per algorithm, chosen by
its ``name`` (a discriminated union, so an unknown name lists the valid ones)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from searchsvc.study.base import Strict as _Strict

__all__ = [
    "AshaSchedulerSpec",
    "CmaEsSamplerSpec",
    "GPSamplerSpec",
    "GridSamplerSpec",
    "HyperbandSchedulerSpec",
    "MedianSchedulerSpec",
    "NSGA2SamplerSpec",
    "NoSchedulerSpec",
    "QMCSamplerSpec",
    "RandomSamplerSpec",
    "SamplerSpec",
    "SchedulerSpec",
    "TPESamplerSpec",
]


# --------------------------------------------------------------------------- samplers


class TPESamplerSpec(_Strict):
    """Tree-structured Parzen estimator (multivariate, grouped for conditional spaces)."""

    name: Literal["tpe"]
    n_startup_trials: int = Field(10, ge=0)
    multivariate: bool = True
    group: bool = True
    constant_liar: bool = True
    max_history: int | None = Field(
        None,
        ge=100,
        description="off by default: TPE models the running trials, the 25 best completed and "
        "the max_history most recent others, so its modelling stops growing (one objective)",
    )


class RandomSamplerSpec(_Strict):
    name: Literal["random"]


class GPSamplerSpec(_Strict):
    name: Literal["gp"]
    n_startup_trials: int = Field(10, ge=0)


class QMCSamplerSpec(_Strict):
    name: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class CmaEsSamplerSpec(_Strict):
    name: Literal["cmaes"]
    n_startup_trials: int = Field(1, ge=0)
    restart_strategy: Literal["ipop", "bipop"] | None = None


class GridSamplerSpec(_Strict):
    """Every combination of the (categorical or fixed) params, once each."""

    name: Literal["grid"]


class NSGA2SamplerSpec(_Strict):
    """NSGA-II for multi-objective studies."""

    name: Literal["nsga2"]
    population_size: int = Field(20, ge=2)


SamplerSpec = Annotated[
    TPESamplerSpec
    | RandomSamplerSpec
    | GPSamplerSpec
    | QMCSamplerSpec
    | CmaEsSamplerSpec
    | GridSamplerSpec
    | NSGA2SamplerSpec,
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- schedulers


class AshaSchedulerSpec(_Strict):
    """Asynchronous successive halving on the validation metric, one rung per epochs."""

    name: Literal["asha"]
    grace_period: int = Field(1, ge=1, description="epochs every trial gets before it can stop")
    reduction_factor: float = Field(3, gt=1)
    brackets: int = Field(1, ge=1)


class MedianSchedulerSpec(_Strict):
    """Stop a trial whose best value is worse than the median of the others' running means."""

    name: Literal["median"]
    grace_period: int = Field(1, ge=1, description="epochs before a trial can stop")
    min_samples_required: int = Field(3, ge=1)


class HyperbandSchedulerSpec(_Strict):
    """Synchronous HyperBand: pauses trials at rung boundaries and resumes the best."""

    name: Literal["hyperband"]
    reduction_factor: float = Field(3, gt=1)


class NoSchedulerSpec(_Strict):
    """No early stopping across trials: every trial runs to max_epochs (or its own patience)."""

    name: Literal["none"]


SchedulerSpec = Annotated[
    AshaSchedulerSpec | MedianSchedulerSpec | HyperbandSchedulerSpec | NoSchedulerSpec,
    Field(discriminator="name"),
]
