"""The config Ray carries for each trial: the trainer's params and the service's bookkeeping,
apart, so a trainer receives exactly the trial's params and nothing of the service's.

``{"params": {...}, "trial": {"number": 3, "seed": 3, "resume_checkpoint": None,
"resume_of": None}}``. Built once by the searcher when it asks Optuna for a trial, read by the
trainable (on the worker) and by the Tune callbacks (in the driver).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RESUMED_AFTER", "TrialTicket", "make_config", "params_of", "ticket_of"]

RESUMED_AFTER = "resumed_after"
"""The result key by which the worker says where the trial continued: the epoch of the
checkpoint it resumed after, or 0 when it started from epoch 1. The searcher counts an
interrupted trial's epochs as the successor's only when the successor confirms it continued
from them."""


@dataclass(frozen=True)
class TrialTicket:
    """The service's bookkeeping for one trial.

    Attributes:
        number: the Optuna trial number.
        seed: the seed the trial trains with: the study's seed plus the number of the first
            trial of its chain (a resumed trial keeps the seed of the one it continues).
            Computed once, by the searcher; training, MLflow params, the stored model's
            ``params.json`` and the ensemble's members all read it from here.
        resume_checkpoint: the checkpoint folder of the interrupted trial this one continues.
        resume_of: the number of the trial that wrote that checkpoint (its owner: the
            interrupted trial, or an earlier one when that trial was interrupted before its
            own first checkpoint).
        replaces: the interrupted trial this one is asked for again in place of (with or
            without a checkpoint to continue from).
    """

    number: int
    seed: int
    resume_checkpoint: str | None = None
    resume_of: int | None = None
    replaces: int | None = None


def make_config(params: Mapping[str, Any], ticket: TrialTicket) -> dict[str, Any]:
    """The Ray config of a trial."""
    return {"params": dict(params), "trial": dataclasses.asdict(ticket)}


def params_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's params of a trial's Ray config."""
    return dict(config["params"])


def ticket_of(config: Mapping[str, Any]) -> TrialTicket:
    """The service's bookkeeping of a trial's Ray config."""
    return TrialTicket(**config["trial"])
