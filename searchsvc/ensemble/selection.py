"""Choosing ensemble members and their weights, pure numpy: the only place for the selection
rules, Caruana et al.'s greedy ensemble selection (:func:`select_greedy`) and equal weights on
the best ``k`` (:func:`select_top_k`), each with the safeguard that its validation log-loss is
never above the best single candidate's. Both work on a cached matrix of validation probabilities
``val_probs`` of shape ``(m, n_val, n_classes)``, one slice per candidate trial, best-first,
computed once with :func:`searchsvc.ensemble.predictor.member_val_probs`, and return one weight
per candidate. Only validation data is ever used to choose members or weights; the test split
is for reporting the final ensemble."""

from __future__ import annotations

import logging

import numpy as np

from searchsvc.ensemble.metrics import PROB_EPS
from searchsvc.errors import EnsembleError

__all__ = ["METHODS", "select_greedy", "select_members", "select_top_k"]

METHODS = ("greedy", "top_k")

logger = logging.getLogger(__name__)


def _check_val_probs(val_probs: np.ndarray, y_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates the (m, n, k) candidate matrix and the labels; returns them as arrays."""
    val_probs = np.asarray(val_probs)
    y_val = np.asarray(y_val)
    if val_probs.ndim != 3:
        raise EnsembleError(
            f"val_probs must be 3-D (candidates, samples, classes); got shape {val_probs.shape}"
        )
    m, n, k = val_probs.shape
    if m == 0:
        raise EnsembleError("no candidates to select from (val_probs has 0 rows)")
    if n == 0:
        raise EnsembleError("cannot select members on an empty validation set")
    if y_val.shape != (n,):
        raise EnsembleError(f"y_val must have shape ({n},) to match val_probs; got {y_val.shape}")
    if not np.issubdtype(y_val.dtype, np.integer):
        raise EnsembleError(f"y_val must be integer labels; got dtype {y_val.dtype}")
    if y_val.min() < 0 or y_val.max() >= k:
        raise EnsembleError(
            f"y_val must lie in 0..{k - 1}; got range {y_val.min()}..{y_val.max()}"
        )
    finite = np.isfinite(val_probs).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise EnsembleError(
            f"val_probs of candidates {bad} contain NaN/inf; drop diverged trials before selection"
        )
    return val_probs, y_val


def select_members(method: str, val_probs: np.ndarray, y_val: np.ndarray, size: int) -> np.ndarray:
    """The weights the ensemble build uses: ``greedy`` (:func:`select_greedy`, initialisations
    of up to three) or ``top_k`` (:func:`select_top_k`), ``size`` picks or members at most."""
    if method == "greedy":
        return select_greedy(val_probs, y_val, size, init_size=3)
    if method == "top_k":
        return select_top_k(val_probs, y_val, size)
    raise EnsembleError(f"unknown ensemble method {method!r}; expected one of {METHODS}")


def select_top_k(val_probs: np.ndarray, y_val: np.ndarray, k: int) -> np.ndarray:
    """Equal weights on the best ``k'`` candidates by validation log-loss, ``k' <= k`` chosen
    on validation: the prefix of that ranking whose average has the lowest log-loss (ties to
    the shorter), so a poor candidate is never forced in and the result's validation log-loss
    is never above the best single candidate's.

    Args:
        val_probs: validation probabilities, shape ``(m, n_val, n_classes)``.
        y_val: validation labels, shape ``(n_val,)``.
        k: the most candidates to keep, ``1 <= k``; capped at ``m`` with a warning.

    Returns:
        Weights of shape ``(m,)``: ``1/k'`` for the ``k'`` kept, 0 for the rest.
    """
    val_probs, y_val = _check_val_probs(val_probs, y_val)
    m, n, _ = val_probs.shape
    if not isinstance(k, int | np.integer) or k < 1:
        raise EnsembleError(f"top-k size must be a positive integer; got {k!r}")
    if k > m:
        logger.warning("top-k asked for %d members but only %d candidates exist", k, m)
        k = m
    p_true = val_probs[:, np.arange(n), y_val].astype(np.float64)
    order = np.argsort(_nll_of_true_probs(p_true), kind="stable")
    kept = _best_prefix(p_true, order, k)
    weights = np.zeros(m, dtype=np.float64)
    weights[order[:kept]] = 1.0 / kept
    return weights


def _best_prefix(p_true: np.ndarray, order: np.ndarray, longest: int) -> int:
    """How many of ``order``'s first candidates to average (1..``longest``) for the lowest
    validation log-loss; ties go to the fewer."""
    cumulative = np.cumsum(p_true[order[:longest]], axis=0)
    losses = _nll_of_true_probs(cumulative / np.arange(1, longest + 1)[:, None])
    return int(np.argmin(losses)) + 1


def _nll_of_true_probs(p_true: np.ndarray) -> np.ndarray:
    """Mean NLL along the last axis of true-class probabilities (clipped like metrics.log_loss)."""
    return -np.mean(np.log(np.clip(p_true, PROB_EPS, 1.0)), axis=-1)


def select_greedy(
    val_probs: np.ndarray, y_val: np.ndarray, size: int, *, init_size: int = 3
) -> np.ndarray:
    """Ensemble selection of Caruana et al. (2004) with its safeguards: sorted initialisation
    of a size chosen on validation, selection with replacement, the best prefix kept.

    The initialisation averages the ``n0`` candidates of lowest validation log-loss, ``n0``
    (1..``init_size``) chosen as the one whose average is best, so a poor candidate is never
    forced in. Then it repeatedly adds the candidate (possibly one already chosen) whose
    inclusion gives the lowest validation log-loss of the equally weighted average of all
    picks, up to ``size`` picks, and returns the best ensemble met along the way (ties to the
    earlier). The initialisation of one is the best single candidate, so the result's
    validation log-loss is never above it. Ties go to the lowest candidate index. Only
    validation data is used.

    Args:
        val_probs: validation probabilities, shape ``(m, n_val, n_classes)``.
        y_val: validation labels, shape ``(n_val,)``.
        size: the most picks (with repetitions), ``>= 1``.
        init_size: the largest initialisation tried, ``>= 0`` (0 and 1 both start from the
            best single candidate); capped at ``size`` and at ``m``.

    Returns:
        Weights of shape ``(m,)``: pick counts of the best prefix over their total; they sum
        to 1.
    """
    val_probs, y_val = _check_val_probs(val_probs, y_val)
    if not isinstance(size, int | np.integer) or size < 1:
        raise EnsembleError(f"greedy ensemble size must be a positive integer; got {size!r}")
    if not isinstance(init_size, int | np.integer) or init_size < 0:
        raise EnsembleError(f"init_size must be a non-negative integer; got {init_size!r}")
    m, n, _ = val_probs.shape
    # The log-loss of an average depends only on each member's probability of the true class,
    # so the whole search runs on an (m, n) matrix instead of (m, n, k).
    p_true = val_probs[:, np.arange(n), y_val].astype(np.float64)
    order = np.argsort(_nll_of_true_probs(p_true), kind="stable")
    n_init = _best_prefix(p_true, order, max(1, min(init_size, size, m)))
    counts = np.zeros(m, dtype=np.int64)
    counts[order[:n_init]] = 1
    running_sum = p_true[order[:n_init]].sum(axis=0)
    best_loss, best_counts = float(_nll_of_true_probs(running_sum / n_init)), counts.copy()
    for picks in range(n_init, size):
        trial_loss = _nll_of_true_probs((running_sum[None, :] + p_true) / (picks + 1))
        best = int(np.argmin(trial_loss))  # argmin returns the first (lowest index) minimum
        counts[best] += 1
        running_sum += p_true[best]
        if trial_loss[best] < best_loss:
            best_loss, best_counts = float(trial_loss[best]), counts.copy()
    logger.debug(
        "greedy selection: init %d, picks %s, val nll %.6f",
        n_init, {int(i): int(c) for i, c in enumerate(best_counts) if c}, best_loss,
    )  # fmt: skip
    return best_counts / float(best_counts.sum())
