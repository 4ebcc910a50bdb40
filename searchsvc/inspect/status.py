"""A study's progress (``searchsvc status``): trials by state and diagnosis, the best so far."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from searchsvc import keys

if TYPE_CHECKING:
    from searchsvc.study_run import StudyRun

__all__ = ["BestSoFar", "StudyStatus", "objective_text", "study_status", "value_text"]


@dataclass(frozen=True)
class BestSoFar:
    """One of the best completed trials."""

    number: int
    values: list[float]
    params: dict[str, Any]
    diagnosis: str | None


@dataclass(frozen=True)
class StudyStatus:
    """What ``searchsvc status`` shows (``--json`` prints exactly this)."""

    name: str
    metric: str
    budget: int
    finished: int
    complete: int
    pruned: int
    diverged: int
    failed: int
    running: int
    interrupted: int
    warm: int = 0  # trials copied from the warm_start study (not run here, not counted)
    diagnoses: dict[str, int] = field(default_factory=dict)
    best: list[BestSoFar] = field(default_factory=list)  # several objectives: the Pareto front
    storage: str = ""
    metrics: list[str] = field(default_factory=list)  # every objective's metric, in order
    pareto: bool = False  # several objectives: ``best`` is the Pareto front
    ensemble_owed: str | None = None  # why the ensemble is still to build (MLflow was away)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)


def study_status(run: StudyRun, top: int = 3) -> StudyStatus:
    """The status of a study that has run (its Optuna study opened, nothing created).

    Raises:
        StudyNotRunError: the study has not run yet.
    """
    from searchsvc.ensemble.owed import ensemble_owed
    from searchsvc.search.storage import count_trials, top_trials

    study = run.study if run.study is not None else run.open_existing()
    counts = count_trials(study)
    pareto = len(run.spec.objectives) > 1
    best = [
        BestSoFar(t.number, list(t.values), dict(t.params), t.user_attrs.get(keys.DIAGNOSIS))
        for t in top_trials(study, run.spec, None if pareto else top)  # the whole front
    ]
    return StudyStatus(
        name=run.spec.name, metric=run.spec.primary.metric,
        budget=int(study.user_attrs.get(keys.BUDGET, run.spec.budget.n_trials)),
        finished=counts.finished, complete=counts.complete, pruned=counts.pruned,
        diverged=counts.diverged, failed=counts.failed, running=counts.running,
        interrupted=counts.interrupted, warm=counts.warm,
        diagnoses=dict(sorted(counts.diagnoses.items())), best=best,
        storage=run.paths.storage_url, metrics=[o.metric for o in run.spec.objectives],
        pareto=pareto, ensemble_owed=ensemble_owed(study),
    )  # fmt: skip


def value_text(value: float) -> str:
    """An objective value as shown: a count (``n_params``) whole, anything else to 4 places."""
    if float(value).is_integer() and abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4f}"


def objective_text(metrics: list[str], values: list[float] | tuple[float, ...]) -> str:
    """``val_accuracy=0.9512 n_params=25450``: each objective's metric and value."""
    return " ".join(f"{m}={value_text(v)}" for m, v in zip(metrics, values, strict=False))
