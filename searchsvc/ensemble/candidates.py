"""The ensemble's candidates: the best completed trials whose stored model loads and predicts
(with several objectives, the Pareto trials ordered by the first objective).

A study of many trials must not lose its ensemble to one bad trial. Each candidate is read
from MLflow, rebuilt and run on the validation split here; one that fails any step (no run,
no stored model, ``params.json`` or ``state_dict.pt`` unreadable, a rebuild that fails,
validation probabilities that are not finite) is skipped with one warning, and the next best
completed trial takes its place until ``limit`` candidates are found. So is a trial whose
``weights`` attribute says its weights were not stored (``missing: <why>``), without a
download. An MLflow outage is not
a bad trial: it ends the build with :class:`~searchsvc.errors.TrackingError`, so that it is
never reported as "no stored weights".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchsvc import keys
from searchsvc.deferred import unreachable
from searchsvc.ensemble.members import rebuild_network
from searchsvc.ensemble.predictor import Member, member_val_probs
from searchsvc.ensemble.summary import SkippedTrial
from searchsvc.errors import TrackingError, first_line
from searchsvc.trainer import Dataset, Trainer

if TYPE_CHECKING:
    import optuna
    from torch import nn

__all__ = ["Candidate", "gather_candidates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A trial that can be a member: its record, stored weights, network and val predictions."""

    member: Member
    state_path: Path
    network: nn.Module
    val_probs: np.ndarray  # (n_val, n_classes), every value finite


class _Skip(Exception):
    """This trial cannot be a candidate; the message says why."""


def gather_candidates(
    ranked: Iterable[optuna.trial.FrozenTrial],
    runs: dict[int, str],
    download: Callable[[str, Path], Path],
    trainer: Trainer,
    data: Dataset,
    folder: Path,
    limit: int,
) -> tuple[list[Candidate], list[SkippedTrial]]:
    """The first ``limit`` usable trials of ``ranked`` (best first), and those skipped.

    Args:
        ranked: completed trials, best first.
        runs: trial number -> MLflow run id.
        download: ``(run_id, folder) -> local model folder`` (MLflow's artifact download).
        folder: where the models are put; each candidate's files stay there.

    Raises:
        TrackingError: MLflow is unreachable.
    """
    pool: list[Candidate] = []
    skipped: list[SkippedTrial] = []
    for trial in ranked:
        if len(pool) >= limit:
            break
        try:
            pool.append(_candidate(trial, runs, download, trainer, data, folder))
        except _Skip as exc:
            logger.warning("trial %d is not an ensemble candidate: %s", trial.number, exc)
            skipped.append(SkippedTrial(trial.number, str(exc)))
    return pool, skipped


def _candidate(
    trial: optuna.trial.FrozenTrial,
    runs: dict[int, str],
    download: Callable[[str, Path], Path],
    trainer: Trainer,
    data: Dataset,
    folder: Path,
) -> Candidate:
    weights = str(trial.user_attrs.get(keys.WEIGHTS, ""))
    if weights.startswith(keys.WEIGHTS_MISSING):  # recorded when Optuna was told COMPLETE
        raise _Skip(weights)
    run_id = runs.get(trial.number)
    if run_id is None:
        raise _Skip("it has no MLflow run")
    target = folder / f"trial_{trial.number}"
    target.mkdir()
    try:
        local = download(run_id, target)
    except Exception as exc:
        if unreachable(exc):
            raise TrackingError(f"tracking server unreachable: {_first_line(exc)}") from None
        raise _Skip(f"it has no stored model ({_first_line(exc)})") from None
    params, seed = _read_params(local / "params.json")
    state = _read_state(local / "state_dict.pt")
    try:
        network = rebuild_network(
            trainer, params, data.n_features, data.n_classes, state, who="its network"
        )
        probs = member_val_probs([network], data.x_val)[0]
    except Exception as exc:  # a trainer's own code: any error is this trial's, not the build's
        raise _Skip(_first_line(exc)) from None
    if not np.isfinite(probs).all():
        raise _Skip("its validation probabilities are not finite")
    member = Member(trial.number, 1.0, params, float(trial.values[0]), seed=seed)
    return Candidate(member, local / "state_dict.pt", network, probs)


def _read_params(path: Path) -> tuple[dict[str, Any], int | None]:
    try:
        info = json.loads(path.read_text())
        return dict(info["params"]), info.get("seed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Skip(f"{path.name} unreadable: {_first_line(exc)}") from None


def _read_state(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a zip, pickled objects: all mean "unusable"
        raise _Skip(f"{path.name} unreadable: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
