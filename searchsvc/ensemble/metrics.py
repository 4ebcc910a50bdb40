"""Classification metrics on predicted class probabilities (numpy only).

Every function takes ``probs`` of shape ``(n, n_classes)`` (rows sum to 1) and integer labels
``y`` of shape ``(n,)`` with values in ``0..n_classes-1``, and returns a Python float.
"""

from __future__ import annotations

import numpy as np

from searchsvc.errors import EnsembleError

__all__ = ["PROB_EPS", "accuracy", "expected_calibration_error", "log_loss", "scores"]

PROB_EPS = 1e-12
"""Probabilities are clipped to at least this before taking logs, so one confidently wrong
prediction gives a large but finite loss instead of inf."""


def _check(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates and converts ``probs``/``y``; raises EnsembleError with a one-line reason."""
    probs = np.asarray(probs)
    y = np.asarray(y)
    if probs.ndim != 2:
        raise EnsembleError(f"probs must be 2-D (n, n_classes); got shape {probs.shape}")
    if y.ndim != 1 or y.shape[0] != probs.shape[0]:
        raise EnsembleError(
            f"labels must be 1-D with one entry per row of probs ({probs.shape[0]}); "
            f"got shape {y.shape}"
        )
    if probs.shape[0] == 0:
        raise EnsembleError("cannot compute a metric on an empty set (0 samples)")
    if not np.issubdtype(y.dtype, np.integer):
        raise EnsembleError(f"labels must be integers; got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise EnsembleError(
            f"labels must lie in 0..{probs.shape[1] - 1}; got range {y.min()}..{y.max()}"
        )
    return probs.astype(np.float64, copy=False), y


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose most probable class is the label.

    Args:
        probs: class probabilities, shape ``(n, n_classes)``.
        y: integer labels, shape ``(n,)``.

    Returns:
        Accuracy in [0, 1]; ties in ``argmax`` go to the lowest class index.
    """
    probs, y = _check(probs, y)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (natural log).

    Args:
        probs: class probabilities, shape ``(n, n_classes)``.
        y: integer labels, shape ``(n,)``.

    Returns:
        ``-mean(log(max(p[i, y[i]], 1e-12)))``.
    """
    probs, y = _check(probs, y)
    p_true = probs[np.arange(y.shape[0]), y]
    return float(-np.mean(np.log(np.clip(p_true, PROB_EPS, 1.0))))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    Each sample's confidence is its top probability; samples fall into ``n_bins`` bins
    ``(0, 1/B], (1/B, 2/B], ..., ((B-1)/B, 1]`` (a confidence of exactly 0 goes to the first).
    ECE is the sample-weighted mean over non-empty bins of ``|accuracy - mean confidence|``.

    Args:
        probs: class probabilities, shape ``(n, n_classes)``.
        y: integer labels, shape ``(n,)``.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ECE in [0, 1].
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise EnsembleError(f"n_bins must be a positive integer; got {n_bins!r}")
    probs, y = _check(probs, y)
    confidence = probs.max(axis=1)
    correct = (np.argmax(probs, axis=1) == y).astype(np.float64)
    # Comparing against linspace edges (rather than ceil(conf * B)) keeps values such as 0.6
    # in the bin whose upper edge they equal, as the reference implementation does.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    nonempty = counts > 0
    gaps = np.abs(acc_sum[nonempty] - conf_sum[nonempty])  # = count * |acc - conf| per bin
    return float(gaps.sum() / y.shape[0])


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The three figures every evaluation reports: ``accuracy``, ``nll`` (log-loss) and
    ``ece`` (15-bin expected calibration error)."""
    return {
        "accuracy": accuracy(probs, y),
        "nll": log_loss(probs, y),
        "ece": expected_calibration_error(probs, y),
    }
