"""The study file's schema: a validated, frozen description of one search.

Every model forbids unknown keys, so a misspelt option is an error, never silently dropped.
The loader (``searchsvc.study.loader``) turns validation errors into one line per problem.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from searchsvc.study import diagnosis as diag
from searchsvc.study.base import Strict as _Strict
from searchsvc.study.conditions import Condition, condition_problem
from searchsvc.study.options import (
    AshaSchedulerSpec,
    SamplerSpec,
    SchedulerSpec,
    TPESamplerSpec,
)
from searchsvc.study.start_points import WarmStartSpec, enqueue_problem
from searchsvc.study.urls import check_storage_url, check_tracking_uri

__all__ = [
    "BudgetSpec",
    "CategoricalParam",
    "Condition",
    "DatasetSpec",
    "DiagnosisSpec",
    "EnsembleSpec",
    "FixedParam",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "ParamSpec",
    "ResourcesSpec",
    "SamplerSpec",
    "SchedulerSpec",
    "StudySpec",
    "WarmStartSpec",
]


class _ParamBase(_Strict):
    when: Condition | None = Field(
        default=None,
        description="The param exists only when this condition on an earlier one holds.",
    )

    @field_validator("when", mode="before")
    @classmethod
    def _parse_when(cls, value: Any) -> Any:
        return Condition.parse(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- search space


class FloatParam(_ParamBase):
    """A real number in [low, high]; ``log: true`` samples log-uniformly."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low}, high={self.high}")
        if self.low >= self.high:
            raise ValueError(f"low < high must hold, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("log: true and step cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        return self


class IntParam(_ParamBase):
    """An integer in [low, high] (both included), optionally on a step or a log scale."""

    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        if self.low >= self.high:
            raise ValueError(f"low < high must hold, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("log: true and step cannot be combined")
        if self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        return self


class CategoricalParam(_ParamBase):
    """One of a list of choices (strings, numbers, booleans or null)."""

    type: Literal["categorical"]
    choices: list[str | int | float | bool | None]

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParam:
        if not self.choices:
            raise ValueError("choices must not be empty")
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")
        return self


class FixedParam(_ParamBase):
    """A constant passed to every trial (a plain scalar in the YAML means the same)."""

    type: Literal["fixed"]
    value: str | int | float | bool | None


def _domain(param: Any) -> tuple[list[Any], bool]:
    """Values ``param`` can take, and whether that list is all of them: a condition on it is
    checked against these before any trial runs."""
    match param:
        case CategoricalParam():
            return list(param.choices), True
        case FixedParam():
            return [param.value], True
        case IntParam() if (param.high - param.low) // param.step < 1000:
            return list(range(param.low, param.high + 1, param.step)), True
        case FloatParam() | IntParam():
            return [param.low, param.high], False
    return [], False


ParamSpec = Annotated[
    FloatParam | IntParam | CategoricalParam | FixedParam, Field(discriminator="type")
]


# --------------------------------------------------------------------------- other sections


class ObjectiveSpec(_Strict):
    """The metric a trial is judged by (on the validation split) and its direction."""

    metric: str
    mode: Literal["min", "max"]

    @property
    def maximize(self) -> bool:
        """Higher is better (``mode: max``)."""
        return self.mode == "max"

    @property
    def direction(self) -> str:
        """Optuna's name for the mode: ``maximize`` or ``minimize``."""
        return "maximize" if self.maximize else "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats value ``b`` by this objective."""
        return a > b if self.maximize else a < b


class DatasetSpec(_Strict):
    """Which data, and how the validation split is carved (the test split only reports)."""

    name: str
    path: str | None = Field(None, description="the .npz file for name: npz")
    data_dir: str | None = Field(None, description="where the IDX files are (else env / cache)")
    val_size: int | float | None = Field(None, description="count, or fraction of training data")
    train_subset: int | None = Field(
        None, ge=1, description="keep only this many training samples"
    )

    @model_validator(mode="after")
    def _check_npz(self) -> DatasetSpec:
        if self.name == "npz" and not self.path:
            raise ValueError("dataset npz needs path: <file.npz>")
        if self.name != "npz" and self.path:
            raise ValueError(f"path is only for dataset npz, not {self.name!r}")
        if isinstance(self.val_size, float) and not 0 < self.val_size < 1:
            raise ValueError(f"val_size as a fraction must be in (0, 1), got {self.val_size}")
        return self


class BudgetSpec(_Strict):
    n_trials: int = Field(ge=1, description="finished trials the study aims for, across runs")
    max_epochs: int = Field(ge=1)
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this")
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0, description="retries of a trial whose worker died")


class ResourcesSpec(_Strict):
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)


class EnsembleSpec(_Strict):
    """How the study's ensemble is built (``searchsvc.ensemble``); the validation split
    chooses everything, the test split only reports."""

    enabled: bool = True
    method: Literal["greedy", "top_k"] = "greedy"
    size: int = Field(10, ge=1, description="greedy: picks with replacement; top_k: k")
    candidates: int = Field(10, ge=1, description="how many of the best trials are candidates")
    choose: Literal["diverse", "best"] = Field(
        "diverse",
        description="diverse: the best trial of each configuration cluster; best: the top "
        "trials by value",
    )
    reseed: int = Field(
        0, ge=0, description="after the search, N retrainings from new seeds (MLflow runs "
        "of their own, not trials) as further candidates: the best N configurations once each, "
        "or the fewer that completed in turn",
    )  # fmt: skip
    refit: bool = Field(
        False, description="retrain the chosen members on training + validation data for "
        "their best epoch counts before registering",
    )  # fmt: skip


class DiagnosisSpec(_Strict):
    """Thresholds of the recipe diagnosis (its rules: ``searchsvc.study.diagnosis``)."""

    # Final training accuracy below this: underfit.
    underfit_train_accuracy: float = Field(diag.UNDERFIT_TRAIN_ACCURACY, gt=0, le=1)
    # With no training accuracy reported: the relative train-loss drop a trial must reach.
    min_loss_drop: float = Field(diag.MIN_LOSS_DROP, ge=0, lt=1)
    # Validation loss this far (relative) above its minimum while training loss falls: overfit.
    overfit_val_rise: float = Field(diag.OVERFIT_VAL_RISE, gt=0)
    # A train-minus-validation accuracy gap above this that grew by gap_growth: overfit.
    overfit_gap: float = Field(diag.OVERFIT_GAP, gt=0, lt=1)
    gap_growth: float = Field(diag.GAP_GROWTH, ge=0, lt=1)


class StudySpec(_Strict):
    """One study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    trainer: str
    dataset: DatasetSpec
    objective: ObjectiveSpec | list[ObjectiveSpec]
    search_space: dict[str, ParamSpec]
    sampler: SamplerSpec = Field(default_factory=lambda: TPESamplerSpec(name="tpe"))
    scheduler: SchedulerSpec = Field(default_factory=lambda: AshaSchedulerSpec(name="asha"))
    budget: BudgetSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    seed: int = 0
    tracking_uri: str | None = None
    storage: str | None = None
    workdir: str | None = None
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    diagnosis: DiagnosisSpec = Field(default_factory=DiagnosisSpec)
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="params tried first, in order (Optuna enqueue_trial)"
    )
    warm_start: WarmStartSpec | None = Field(
        None, description="an earlier study whose completed trials join this one's history"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _known_tracking_scheme(cls, value: str | None) -> str | None:
        return None if value is None else check_tracking_uri(value)

    @field_validator("storage")
    @classmethod
    def _known_storage_dialect(cls, value: str | None) -> str | None:
        return None if value is None else check_storage_url(value)

    @field_validator("search_space", mode="before")
    @classmethod
    def _scalars_are_fixed(cls, value: Any) -> Any:
        # A bare scalar (``batch_size: 128``) is a constant: the common case in comparison studies.
        if isinstance(value, dict):
            return {
                key: spec if isinstance(spec, dict) else {"type": "fixed", "value": spec}
                for key, spec in value.items()
            }
        return value

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("sampler", "scheduler", mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_space(self) -> StudySpec:
        if not self.search_space:
            raise ValueError("search_space must name at least one param")
        seen: dict[str, Any] = {}
        for key, param in self.search_space.items():
            if param.when is not None:
                parent = param.when.param
                if parent not in seen:
                    raise ValueError(
                        f"search_space -> {key}: condition '{param.when}' refers to {parent!r}, "
                        "which must be a param defined above it"
                    )
                problem = condition_problem(param.when, _domain(seen[parent]))
                if problem:
                    raise ValueError(f"search_space -> {key}: {problem}")
            seen[key] = param
        problem = enqueue_problem(self.search_space, self.enqueue)
        if problem:
            raise ValueError(problem)
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective metrics must be distinct, got {names}")
        if self.sampler.name == "nsga2" and len(self.objectives) < 2:
            raise ValueError(
                "sampler nsga2 is multi-objective: give objective a list of two or more"
            )
        if getattr(self.sampler, "max_history", None) and len(self.objectives) > 1:
            raise ValueError("sampler -> max_history: only for one objective (TPE's best "
                             "trials are kept by value)")  # fmt: skip
        if self.sampler.name == "grid":
            for key, param in self.search_space.items():
                if not isinstance(param, CategoricalParam | FixedParam):
                    raise ValueError(
                        f"search_space -> {key}: sampler grid needs categorical or fixed params, "
                        f"got type {param.type}"
                    )
                if param.when is not None:
                    raise ValueError(
                        f"search_space -> {key}: sampler grid does not support conditions"
                    )
        return self

    @property
    def objectives(self) -> list[ObjectiveSpec]:
        """All objectives; the first is the primary (early stopping, best trial, ensemble)."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def primary(self) -> ObjectiveSpec:
        return self.objectives[0]

    def grid(self) -> dict[str, list[Any]]:
        """The grid of a grid study: each categorical param's choices (the schema allows no
        other searched params with a grid sampler)."""
        return {
            name: list(param.choices)
            for name, param in self.search_space.items()
            if isinstance(param, CategoricalParam)
        }

    def grid_size(self) -> int:
        """The number of combinations a grid sampler enumerates."""
        return math.prod(len(choices) for choices in self.grid().values())
