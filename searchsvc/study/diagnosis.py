"""The recipe as a diagnosis: what each trial's own curves say about it.

The material's recipe asks two questions in order. First: good results on the *training*
data? If not, the network is not well trained (underfit): change the activation, use an
adaptive learning rate, a better initialiser; do not blame overfitting. Only then: good
results on the *validation* data? If not, it overfits: early stopping, weight decay, dropout.

Plain rules on the per-epoch curves, with these default thresholds (a study overrides them in
its ``diagnosis:`` section, e.g. a lower ``underfit_train_accuracy`` for a harder dataset such
as Fashion-MNIST, where even the best networks of a short search train to about 0.92):

* ``diverged``: the trainer reported a non-finite loss (``diverged`` metric).
* ``underfit``: the last training accuracy is below ``UNDERFIT_TRAIN_ACCURACY`` (0.90), or,
  with no accuracy reported, the training loss fell by less than ``MIN_LOSS_DROP`` (10 %)
  from the first epoch to the best one over at least ``MIN_EPOCHS`` (3) epochs.
* ``overfit``: training is good, and the validation loss ended more than
  ``OVERFIT_VAL_RISE`` (10 %) above its minimum while the training loss kept falling after
  that minimum, or the final train-minus-validation accuracy gap exceeds ``OVERFIT_GAP``
  (0.03) and grew by at least ``GAP_GROWTH`` (0.01) since the epoch of lowest validation loss.
* ``healthy``: none of the above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ADVICE", "Diagnosis", "Thresholds", "diagnose"]

UNDERFIT_TRAIN_ACCURACY = 0.90
MIN_LOSS_DROP = 0.10
MIN_EPOCHS = 3
OVERFIT_VAL_RISE = 0.10
OVERFIT_GAP = 0.03
GAP_GROWTH = 0.01


@dataclass(frozen=True)
class Thresholds:
    """The numbers the rules compare against (defaults: the module constants above)."""

    underfit_train_accuracy: float = UNDERFIT_TRAIN_ACCURACY
    min_loss_drop: float = MIN_LOSS_DROP
    overfit_val_rise: float = OVERFIT_VAL_RISE
    overfit_gap: float = OVERFIT_GAP
    gap_growth: float = GAP_GROWTH


ADVICE: dict[str, str] = {
    "diverged": "lower the learning rate, clip gradients (clip_norm), use an adaptive optimiser",
    "underfit": (
        "train better before regularising: another activation (ReLU family, maxout), "
        "an adaptive learning rate (adam, rmsprop), a better initialiser (he_*, xavier_*), "
        "more epochs or width; do not add dropout or weight decay"
    ),
    "overfit": "early stopping (patience), weight decay, dropout, more data",
    "healthy": "nothing to fix: search around it or ensemble it",
    "unknown": "too few epochs to judge",
}


@dataclass(frozen=True)
class Diagnosis:
    """A trial's diagnosis, the figures that led to it and the material's suggested knobs."""

    label: str
    evidence: Mapping[str, float] = field(default_factory=dict)

    @property
    def advice(self) -> str:
        return ADVICE[self.label]

    def summary(self) -> str:
        """E.g. ``overfit: val_loss_rise=0.23, gap=0.05``."""
        figures = ", ".join(f"{k}={v:.3g}" for k, v in self.evidence.items())
        return f"{self.label}: {figures}" if figures else self.label


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def diagnose(
    curves: Mapping[str, Sequence[float]],
    *,
    diverged: bool = False,
    thresholds: Thresholds | None = None,
) -> Diagnosis:
    """Diagnose one trial from its per-epoch curves (one value per epoch, in order).

    Args:
        curves: any of ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``.
        diverged: the trainer reported a non-finite loss.
        thresholds: the rules' numbers; the documented defaults when omitted.
    """
    limits = thresholds or Thresholds()
    train_loss = _finite(curves.get("train_loss", []))
    val_loss = _finite(curves.get("val_loss", []))
    train_acc = _finite(curves.get("train_accuracy", []))
    val_acc = _finite(curves.get("val_accuracy", []))
    if diverged:
        return Diagnosis("diverged", {"epochs": float(len(curves.get("train_loss", [])))})
    if not train_loss and not train_acc:
        return Diagnosis("unknown")

    # 1. Good results on the training data?
    if train_acc and train_acc[-1] < limits.underfit_train_accuracy:
        return Diagnosis("underfit", {"train_accuracy": train_acc[-1]})
    if not train_acc and len(train_loss) >= MIN_EPOCHS:
        drop = (train_loss[0] - min(train_loss)) / max(abs(train_loss[0]), 1e-12)
        if drop < limits.min_loss_drop:
            return Diagnosis("underfit", {"train_loss_drop": drop})

    # 2. Good results on the validation data?
    if len(val_loss) >= 2 and len(train_loss) == len(val_loss):
        best = min(range(len(val_loss)), key=val_loss.__getitem__)
        rise = (val_loss[-1] - val_loss[best]) / max(abs(val_loss[best]), 1e-12)
        if rise > limits.overfit_val_rise and train_loss[-1] < train_loss[best]:
            return Diagnosis("overfit", {"val_loss_rise": rise, "best_val_epoch": best + 1.0})
    if len(train_acc) >= 2 and len(val_acc) == len(train_acc):
        # Growth since the best validation epoch: before it the network is still learning,
        # and a gap that was already there then is not overfitting in progress.
        reference = 0
        if len(val_loss) == len(val_acc):
            reference = min(range(len(val_loss)), key=val_loss.__getitem__)
        gap_then = train_acc[reference] - val_acc[reference]
        gap = train_acc[-1] - val_acc[-1]
        if gap > limits.overfit_gap and gap - gap_then >= limits.gap_growth:
            return Diagnosis("overfit", {"gap": gap, "gap_growth": gap - gap_then})
    evidence = {}
    if train_acc:
        evidence["train_accuracy"] = train_acc[-1]
    if train_acc and val_acc:
        evidence["gap"] = train_acc[-1] - val_acc[-1]
    return Diagnosis("healthy", evidence)
