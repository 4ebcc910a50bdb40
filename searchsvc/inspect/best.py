"""The best params of a study as a study-file fragment (``searchsvc best``).

The fragment is ``{"search_space": {param: value, ...}}`` with every param the best trial ran
with (the file's constants included) as a constant, so it replaces the ``search_space`` of a
new study file, which then trains exactly that configuration. With several objectives there
is no single best: the Pareto trials, ordered by the first objective, one fragment each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from searchsvc.errors import SearchsvcError

if TYPE_CHECKING:
    from searchsvc.inspect.target import StudyTarget
    from searchsvc.study.spec import StudySpec

__all__ = ["BestTrial", "best_trials", "fragments_yaml"]


@dataclass(frozen=True)
class BestTrial:
    """A best (or Pareto) trial and the params it ran with.

    Attributes:
        number: the Optuna trial number.
        values: its objective values, in the study's order.
        metrics: the objective metrics' names, in the same order.
        params: every param it ran with, the study file's constants included.
    """

    number: int
    values: list[float]
    metrics: list[str]
    params: dict[str, Any]

    @property
    def fragment(self) -> dict[str, Any]:
        """The study-file fragment: its params as the constants of a ``search_space``."""
        return {"search_space": dict(self.params)}

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON (the fragment included)."""
        return {**asdict(self), "fragment": self.fragment}


def best_trials(target: StudyTarget) -> list[BestTrial]:
    """The best completed trial, or with several objectives the Pareto trials (best first
    by the first objective).

    Raises:
        StudyNotRunError: the study has not run.
        SearchsvcError: no trial has completed yet.
    """
    from searchsvc.search.storage import pareto_trials

    study = target.open()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise SearchsvcError(f"{target.where}: study {target.name!r} has no completed trial yet")
    metrics = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    maximize = study.directions[0].name == "MAXIMIZE"
    chosen = [study.best_trial] if len(study.directions) == 1 else pareto_trials(study, maximize)
    return [
        BestTrial(t.number, list(t.values), list(metrics), _all_params(t.params, target.spec))
        for t in chosen
    ]


def _all_params(sampled: dict[str, Any], spec: StudySpec | None) -> dict[str, Any]:
    """The trial's params in the study file's order, with the file's constants that applied
    (Optuna stores only what its sampler suggested)."""
    if spec is None:
        return dict(sampled)
    from searchsvc.study.spec import FixedParam

    params: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        if name in sampled:
            params[name] = sampled[name]
        elif isinstance(param, FixedParam) and (param.when is None or param.when.holds(params)):
            params[name] = param.value
    return {**params, **{k: v for k, v in sampled.items() if k not in params}}


def fragments_yaml(best: list[BestTrial], target: StudyTarget) -> str:
    """The fragments as YAML: one document per trial, each headed by a comment saying which
    trial it is (``yaml.safe_load_all`` reads them back; the first is the best)."""
    import yaml

    documents = []
    for rank, trial in enumerate(best):
        pairs = zip(trial.metrics, trial.values, strict=True)
        scores = ", ".join(f"{metric}={value:.6g}" for metric, value in pairs)
        kind = "best trial" if len(best) == 1 else f"Pareto trial {rank + 1} of {len(best)}"
        header = (
            f"# {kind}: trial {trial.number} of study {target.name!r} ({scores}).\n"
            "# Replace a study file's search_space with this one to train exactly these params.\n"
        )
        documents.append(header + yaml.safe_dump(trial.fragment, sort_keys=False))
    return "---\n".join(documents)
