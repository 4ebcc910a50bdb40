"""What a study's ensemble build ended with: the record the CLI prints, the report reads (as
``ensemble/summary.json`` on the parent run) and Python callers get back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["EnsembleSummary", "MemberWeight", "Scores", "SkippedTrial"]


@dataclass(frozen=True)
class Scores:
    """Accuracy, log-loss (``nll``) and expected calibration error (``ece``, 15 equal-width
    confidence bins) of one set of class probabilities against the true labels."""

    accuracy: float
    nll: float
    ece: float


@dataclass(frozen=True)
class MemberWeight:
    """One member: its trial (``reseed`` > 0: that trial's k-th reseed) and its weight."""

    trial: int
    weight: float
    reseed: int = 0


@dataclass(frozen=True)
class SkippedTrial:
    """A completed trial left out of the candidates, and why (one line)."""

    trial: int
    reason: str


@dataclass
class EnsembleSummary:
    """The ensemble of a study, chosen on the validation split and reported on the test split.

    Attributes:
        method: ``greedy`` or ``top_k``.
        members: the trials and their weights.
        val_nll, val_accuracy: the ensemble on the validation split (what chose it).
        best_single_trial: the best completed trial with stored weights.
        best_single_val_nll: that trial on the validation split.
        best_single, ensemble: test-split scores (None when the data has no test split).
        registered: what won on validation log-loss and was registered: ``ensemble`` (the
            selection) or ``best_single`` (the best single trial alone).
        candidates: the trials the selection chose from, best first (several objectives:
            Pareto trials, by the first objective).
        skipped: completed trials passed over because their stored model is missing or
            unusable (the next best took their place).
        version: the registered model version; ``champion``: whether the alias moved to it;
            ``model_uri``: how to load it.
        reseeds: the reseeds among the candidates (``"7-reseed-1"``).
        refit: the members (and the best single trial) retrained on training + validation
            data (their keys); ``best_single`` and ``ensemble`` are then the refit networks'
            test scores and ``pre_refit_*`` those of the networks the search trained.
        refit_failed: why a refit asked for was not kept (the pre-refit ones are registered).
    """

    method: str
    members: list[MemberWeight]
    val_nll: float
    val_accuracy: float
    best_single_trial: int
    best_single_val_nll: float
    best_single: Scores | None = None
    ensemble: Scores | None = None
    skipped: list[SkippedTrial] = dataclasses.field(default_factory=list)
    candidates: list[int] = dataclasses.field(default_factory=list)
    registered: str = "ensemble"
    version: str | None = None
    champion: bool = False
    model_uri: str | None = None
    reseeds: list[str] = dataclasses.field(default_factory=list)
    refit: list[str] = dataclasses.field(default_factory=list)
    refit_failed: str = ""
    pre_refit_best_single: Scores | None = None
    pre_refit_ensemble: Scores | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` form (``best_single`` also names its trial)."""
        data = dataclasses.asdict(self)
        # By how much the registered model beats the best single trial on validation (>= 0).
        data["val_nll_margin"] = self.best_single_val_nll - self.val_nll
        if data["best_single"] is not None:
            data["best_single"]["trial"] = self.best_single_trial
        return data
