"""Candidates chosen for diversity as well as score: the best trial of each configuration
cluster (``ensemble: {choose: diverse}``, the default).

The best few trials of one search are often one configuration with small changes, and an
average of near-copies removes little of a network's error. So the candidates come from the
``POOL_FACTOR x candidates`` best completed trials, grouped into ``candidates`` clusters of
similar configurations; each cluster gives its best trial. The clusters are centred by
farthest-first traversal from the best trial (Gonzalez 1985): deterministic, needing no
cluster count guessed beyond the candidates asked for, and always keeping the best trial.

Why by hand: it is twenty lines of numpy, while scikit-learn's k-means is a large dependency
for it and depends on its random initialisation.

Distance is measured on the search space: a float or int param scaled to [0, 1] over its
range (on the log scale for ``log: true``), a categorical one as one-hot halves (so that two
different choices are 1 apart), a param a condition left out as -1 (1 or more from every
value it takes). Fixed params are the same in every trial and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from searchsvc.study.spec import CategoricalParam, FloatParam, IntParam, StudySpec

if TYPE_CHECKING:
    import optuna

__all__ = ["POOL_FACTOR", "diverse_order", "encode_params"]

POOL_FACTOR = 3
"""The pool the clusters are drawn from: this many times the candidates asked for."""

_ABSENT = -1.0


def encode_params(spec: StudySpec, params: dict[str, Any]) -> np.ndarray:
    """A trial's params as a point of the search space (see the module docstring)."""
    point: list[float] = []
    for name, param in spec.search_space.items():
        value = params.get(name)
        if isinstance(param, CategoricalParam):
            point += [
                _ABSENT if value is None else math.sqrt(0.5) * float(value == choice)
                for choice in param.choices
            ]
        elif isinstance(param, FloatParam | IntParam):
            point.append(_ABSENT if value is None else _scaled(param, float(value)))
    return np.asarray(point, dtype=np.float64)


def _scaled(param: FloatParam | IntParam, value: float) -> float:
    low, high = float(param.low), float(param.high)
    if param.log:
        low, high, value = math.log(low), math.log(high), math.log(max(value, 1e-300))
    return 0.0 if high == low else (value - low) / (high - low)


def diverse_order(
    ranked: Sequence[optuna.trial.FrozenTrial], spec: StudySpec, candidates: int
) -> list[optuna.trial.FrozenTrial]:
    """``ranked`` (best first) reordered so the first ``candidates`` are the best trial of
    each cluster of the pool, best first; the rest follow by rank (taking the place of a
    candidate whose model turns out unusable).
    """
    pool = list(ranked[: POOL_FACTOR * candidates])
    if len(pool) <= candidates:
        return list(ranked)
    points = np.stack([encode_params(spec, trial.params) for trial in pool])
    centres = _farthest_first(points, candidates)
    distances = np.linalg.norm(points[:, None, :] - points[None, centres, :], axis=2)
    cluster = np.argmin(distances, axis=1)  # ties to the earlier centre
    # The best (lowest rank) member of each cluster; every centre is in its own cluster.
    firsts = sorted({int(np.flatnonzero(cluster == c)[0]) for c in range(len(centres))})
    chosen = [pool[i] for i in firsts]
    numbers = {trial.number for trial in chosen}
    return chosen + [trial for trial in ranked if trial.number not in numbers]


def _farthest_first(points: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` centres: the first point, then each time the point farthest from
    the centres so far (ties to the better-ranked)."""
    centres = [0]
    nearest = np.linalg.norm(points - points[0], axis=1)
    while len(centres) < k:
        index = int(np.argmax(nearest))
        if nearest[index] == 0.0:  # every point is a centre's duplicate: no more clusters
            break
        centres.append(index)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[index], axis=1))
    return centres
