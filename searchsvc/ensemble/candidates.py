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

    from searchsvc.study.spec import StudySpec

__all__ = ["Candidate", "Source", "gather_candidates", "ranked_trials", "trial_sources"]

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


@dataclass(frozen=True)
class Source:
    """Where a candidate comes from: a completed trial, or a reseed of one.

    Attributes:
        number: the trial's number.
        value: its value of the primary objective (a reseed's: at its best epoch).
        run_id: its MLflow run (None: it has none).
        reseed: 0 for the trial itself, k for its k-th reseed.
        weights: the trial's ``weights`` attribute (``missing: <why>`` skips it unread).
    """

    number: int
    value: float
    run_id: str | None
    reseed: int = 0
    weights: str = ""

    @property
    def name(self) -> str:
        return (
            f"reseed {self.reseed} of trial {self.number}"
            if self.reseed
            else (f"trial {self.number}")
        )


def ranked_trials(study: optuna.Study, spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    """The completed trials that may be candidates, best first (``top_trials``' order).

    Trials copied by a warm start ran in another study: their models are not this one's.
    """
    from searchsvc.search.storage import top_trials

    return [t for t in top_trials(study, spec, None) if keys.WARM_FROM not in t.user_attrs]


def trial_sources(
    ranked: Iterable[optuna.trial.FrozenTrial], runs: dict[int, str]
) -> list[Source]:
    """The sources of completed trials (best first) and their runs (trial number -> id)."""
    return [
        Source(t.number, float(t.values[0]), runs.get(t.number),
               weights=str(t.user_attrs.get(keys.WEIGHTS, "")))
        for t in ranked
    ]  # fmt: skip


def gather_candidates(
    sources: Iterable[Source],
    download: Callable[[str, Path], Path],
    trainer: Trainer,
    data: Dataset,
    folder: Path,
    limit: int,
) -> tuple[list[Candidate], list[SkippedTrial]]:
    """The first ``limit`` usable ``sources`` (in their order), and those skipped.

    Args:
        download: ``(run_id, folder) -> local model folder`` (MLflow's artifact download).
        folder: where the models are put; each candidate's files stay there.

    Raises:
        TrackingError: MLflow is unreachable.
    """
    pool: list[Candidate] = []
    skipped: list[SkippedTrial] = []
    for source in sources:
        if len(pool) >= limit:
            break
        try:
            pool.append(_candidate(source, download, trainer, data, folder))
        except _Skip as exc:
            logger.warning("%s is not an ensemble candidate: %s", source.name, exc)
            reason = f"reseed {source.reseed}: {exc}" if source.reseed else str(exc)
            skipped.append(SkippedTrial(source.number, reason))
    return pool, skipped


def _candidate(
    source: Source,
    download: Callable[[str, Path], Path],
    trainer: Trainer,
    data: Dataset,
    folder: Path,
) -> Candidate:
    if source.weights.startswith(keys.WEIGHTS_MISSING):  # recorded when Optuna was told COMPLETE
        raise _Skip(source.weights)
    if source.run_id is None:
        raise _Skip("it has no MLflow run")
    target = folder / (
        f"trial_{source.number}" + (f"_reseed_{source.reseed}" * bool(source.reseed))
    )
    target.mkdir()
    try:
        local = download(source.run_id, target)
    except Exception as exc:
        if unreachable(exc):
            raise TrackingError(f"tracking server unreachable: {_first_line(exc)}") from None
        raise _Skip(f"it has no stored model ({_first_line(exc)})") from None
    params, seed, best_epoch = _read_params(local / "params.json")
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
    member = Member(source.number, 1.0, params, source.value, seed=seed, reseed=source.reseed,
                    best_epoch=best_epoch)  # fmt: skip
    return Candidate(member, local / "state_dict.pt", network, probs)


def _read_params(path: Path) -> tuple[dict[str, Any], int | None, int | None]:
    """The params, seed and best epoch that ``params.json`` records."""
    try:
        info = json.loads(path.read_text())
        return dict(info["params"]), info.get("seed"), info.get("best_epoch")
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
