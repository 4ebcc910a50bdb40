"""A study's start points in Optuna: ``enqueue:`` entries as waiting trials, and the COMPLETE
trials of a ``warm_start:`` study added to its history.

Both happen once, when the study is first opened by ``searchsvc run`` (a study attribute
records it), so a resumed or continued study does not try its start points again. The warm
start is checked first (:func:`warm_start_problem`, from ``validate`` and before a run creates
anything): the source study exists, optimises the same directions, and every param it shares
with this search space has the same distribution. The sampler then learns from those trials
as if this study had run them; they are not counted toward this study's budget and are never
ensemble candidates (their models belong to the other study).
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from searchsvc import keys
from searchsvc.redaction import redact_url
from searchsvc.search.space import to_distribution
from searchsvc.study.spec import StudySpec

__all__ = ["apply_start_points", "warm_start_problem", "warm_trials"]

logger = logging.getLogger(__name__)

# What a copied trial keeps of the source's attributes (shown by trials, status, the report).
_KEPT_ATTRS = (keys.EPOCHS, keys.BEST_EPOCH, keys.DIAGNOSIS, keys.REASON)


def warm_start_problem(spec: StudySpec) -> str | None:
    """Why the study's ``warm_start`` cannot be used, as one line; None when it can (or
    there is none). Reads the source study only."""
    if spec.warm_start is None:
        return None
    try:
        _source_trials(spec)
    except _Unusable as exc:
        return str(exc)
    return None


def warm_trials(spec: StudySpec) -> list[FrozenTrial]:
    """The source study's COMPLETE trials as trials of this study (the shared params only).

    Raises:
        StudySpecError: the warm start cannot be used (see :func:`warm_start_problem`).
    """
    from searchsvc.errors import StudySpecError

    try:
        trials = _source_trials(spec)
    except _Unusable as exc:
        raise StudySpecError(str(exc)) from None
    source = spec.warm_start.study if spec.warm_start else ""
    copied = []
    for trial in trials:
        shared = {k: v for k, v in trial.distributions.items() if k in spec.search_space}
        attrs = {k: trial.user_attrs[k] for k in _KEPT_ATTRS if k in trial.user_attrs}
        attrs[keys.WARM_FROM] = f"{source}#{trial.number}"
        copied.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                params={k: trial.params[k] for k in shared},
                distributions=shared,
                values=list(trial.values),
                intermediate_values=dict(trial.intermediate_values),
                user_attrs=attrs,
            )
        )
    return copied


def apply_start_points(study: optuna.Study, spec: StudySpec) -> tuple[int, int]:
    """Enqueue the study's ``enqueue:`` entries and add its warm start's trials, once.

    Returns:
        (entries enqueued, trials added); (0, 0) when the study had its start points before.
    """
    if study.user_attrs.get(keys.START_POINTS):
        return 0, 0
    added = warm_trials(spec) if spec.warm_start is not None else []
    if added:
        study.add_trials(added)
    for entry in spec.enqueue:
        study.enqueue_trial(dict(entry), user_attrs={keys.ENQUEUED: True})
    study.set_user_attr(keys.START_POINTS, True)
    if added or spec.enqueue:
        logger.info(
            "study %s starts from %d enqueued trial(s) and %d warm-start trial(s)",
            spec.name, len(spec.enqueue), len(added),
        )  # fmt: skip
    return len(spec.enqueue), len(added)


class _Unusable(Exception):
    """The warm start cannot be used; the message says why, naming the key or param."""


def _source_trials(spec: StudySpec) -> list[FrozenTrial]:
    warm = spec.warm_start
    assert warm is not None
    shown = redact_url(warm.storage)
    if warm.storage.startswith("sqlite:///"):
        # Opening a missing SQLite file would create an empty database: say there is none.
        if not Path(warm.storage.removeprefix("sqlite:///")).exists():
            raise _Unusable(f"warm_start -> storage: no Optuna storage at {shown}")
    try:
        storage = optuna.storages.RDBStorage(warm.storage)
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as exc:
        raise _Unusable(f"warm_start -> storage: cannot open {shown}: {exc}") from None
    if warm.study not in names:
        raise _Unusable(f"warm_start -> study: no study {warm.study!r} in {shown}")
    source = optuna.load_study(study_name=warm.study, storage=storage)
    theirs = [d.name.lower() for d in source.directions]
    ours = [o.direction for o in spec.objectives]
    if theirs != ours:
        raise _Unusable(
            f"warm_start -> study: study {warm.study!r} has directions {theirs}, this study {ours}"
        )
    metrics = [o.metric for o in spec.objectives]
    if source.metric_names is not None and list(source.metric_names) != metrics:
        raise _Unusable(
            f"warm_start -> study: study {warm.study!r} optimises {list(source.metric_names)}, "
            f"this study {metrics}"
        )
    trials = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for trial in trials:
        for name, theirs_dist in trial.distributions.items():
            if name not in spec.search_space:
                continue  # a param this space does not search: left out of the copy
            ours_dist = to_distribution(spec.search_space[name])
            if ours_dist != theirs_dist:
                here = "a constant" if ours_dist is None else repr(ours_dist)
                raise _Unusable(
                    f"warm_start: param {name!r} is {theirs_dist!r} in study {warm.study!r} "
                    f"but {here} in search_space"
                )
    return trials
