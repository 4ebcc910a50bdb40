"""The selection the ensemble build uses never loses to its best single candidate on
validation log-loss: a property checked over 240 seeded random pools with poor members, for
every method."""

from __future__ import annotations

import numpy as np
import pytest

from searchsvc.ensemble.metrics import log_loss
from searchsvc.ensemble.selection import METHODS, select_members

POOLS = 240


def _pool(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A few decent candidates, several confidently wrong ones, best-first by a noisy score
    (as a study's objective ranks trials: not by validation log-loss)."""
    rng = np.random.default_rng(seed)
    n_classes, n_val = int(rng.integers(2, 11)), int(rng.integers(20, 120))
    y = rng.integers(0, n_classes, size=n_val)
    n_good, n_poor = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    logits = []
    for index in range(n_good + n_poor):
        noise = rng.normal(size=(n_val, n_classes)) * rng.uniform(0.5, 3.0)
        signal = np.eye(n_classes)[y] * (rng.uniform(1.0, 4.0) if index < n_good else 0.0)
        wrong = np.eye(n_classes)[(y + 1) % n_classes] * (0.0 if index < n_good else 6.0)
        logits.append(signal + wrong + noise)
    probs = np.exp(np.stack(logits))
    probs /= probs.sum(axis=2, keepdims=True)
    order = rng.permutation(len(probs))  # the objective's ranking is not the log-loss's
    size = int(rng.integers(1, 12))
    return probs[order].astype(np.float32), y, size


@pytest.mark.parametrize("method", METHODS)
def test_the_selected_ensemble_is_never_worse_than_the_best_single_candidate(method):
    worse = []
    for seed in range(POOLS):
        val_probs, y, size = _pool(seed)
        weights = select_members(method, val_probs, y, size)
        assert weights.shape == (len(val_probs),) and np.isclose(weights.sum(), 1.0)
        ensemble = np.tensordot(weights, val_probs.astype(np.float64), axes=1)
        best_single = min(log_loss(p, y) for p in val_probs)
        if log_loss(ensemble, y) > best_single + 1e-9:
            worse.append((seed, log_loss(ensemble, y), best_single))
    assert worse == [], f"{len(worse)} of {POOLS} pools lose to their best single candidate"
