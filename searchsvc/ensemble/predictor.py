"""Ensembles of the best trials: member selection, batched prediction, the on-disk layout.

Pure numpy/torch; nothing here imports MLflow (``searchsvc.ensemble.pyfunc`` does the MLflow side).

Selection works on a cached matrix of validation probabilities ``val_probs`` of shape
``(m, n_val, n_classes)``, one slice per candidate trial, computed once with
:func:`member_val_probs`. Only validation data is ever used to choose members or weights; the
test split is for reporting the final ensemble.

A *members directory* is the self-contained form of an ensemble (what the MLflow model stores
as its ``members`` artifact)::

    <dir>/members.json                      # manifest, see write_members_dir
    <dir>/member_000_trial_12/state_dict.pt # torch.save(state_dict); loaded weights_only=True
    <dir>/member_000_trial_12/params.json   # the trial params (a copy, for humans)
    <dir>/member_001_trial_7/...

Prediction refuses integer features and, when the manifest records the range of the training
features (``feature_range``), float features far outside it: the networks were trained on
scaled features (MNIST pixels / 255 in [0, 1]), and raw 0-255 pixels would give confident,
wrong answers without any error.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searchsvc.ensemble.metrics import PROB_EPS, accuracy, expected_calibration_error, log_loss
from searchsvc.errors import EnsembleError, SearchsvcError
from searchsvc.trainer import Trainer

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "Ensemble",
    "FEATURE_RANGE_MARGIN",
    "Member",
    "TrainerResolver",
    "feature_range_of",
    "load_members_dir",
    "read_manifest",
    "member_val_probs",
    "rebuild_network",
    "resolve_trainer_ref",
    "save_members_dir",
    "select_greedy",
    "select_top_k",
    "write_members_dir",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "members.json"
MANIFEST_VERSION = 1

TrainerResolver = Callable[[str], Trainer]
"""Maps a trainer reference (``mlp`` or ``module:object``) to a trainer object."""

FEATURE_RANGE_MARGIN = 0.5
"""Slack around the training features' range, as a fraction of its width, before input is
refused: unseen samples may go a little past the training extremes, while unscaled pixels
(0-255 against [0, 1]) are hundreds of widths away."""


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


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


def select_top_k(val_probs: np.ndarray, y_val: np.ndarray, k: int) -> np.ndarray:
    """Equal weights on the first ``k`` candidates.

    Args:
        val_probs: validation probabilities, shape ``(m, n_val, n_classes)``, candidates
            sorted best-first by the study objective.
        y_val: validation labels, shape ``(n_val,)`` (only checked for consistency).
        k: how many candidates to keep, ``1 <= k``; capped at ``m`` with a warning.

    Returns:
        Weights of shape ``(m,)``: ``1/k`` for the first ``k`` candidates, 0 for the rest.
    """
    val_probs, _ = _check_val_probs(val_probs, y_val)
    m = val_probs.shape[0]
    if not isinstance(k, int | np.integer) or k < 1:
        raise EnsembleError(f"top-k size must be a positive integer; got {k!r}")
    if k > m:
        logger.warning("top-k asked for %d members but only %d candidates exist", k, m)
        k = m
    weights = np.zeros(m, dtype=np.float64)
    weights[:k] = 1.0 / k
    return weights


def _nll_of_true_probs(p_true: np.ndarray) -> np.ndarray:
    """Mean NLL along the last axis of true-class probabilities (clipped like metrics.log_loss)."""
    return -np.mean(np.log(np.clip(p_true, PROB_EPS, 1.0)), axis=-1)


def select_greedy(
    val_probs: np.ndarray, y_val: np.ndarray, size: int, *, init_size: int = 3
) -> np.ndarray:
    """Ensemble selection of Caruana et al. (2004), sorted init, with replacement.

    Starts from the ``init_size`` candidates with the lowest validation log-loss (each once),
    then repeatedly adds the candidate (possibly one already chosen) whose inclusion gives the
    lowest validation log-loss of the equally weighted average of all picks, until ``size``
    picks have been made. Ties go to the lowest candidate index. Only validation data is used.

    Args:
        val_probs: validation probabilities, shape ``(m, n_val, n_classes)``.
        y_val: validation labels, shape ``(n_val,)``.
        size: total number of picks (with repetitions), ``>= 1``.
        init_size: candidates in the sorted initialisation, ``>= 0``; capped at ``size``
            and at ``m``.

    Returns:
        Weights of shape ``(m,)``: pick counts divided by ``size``; they sum to 1.
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
    single_loss = _nll_of_true_probs(p_true)
    init = np.argsort(single_loss, kind="stable")[: min(init_size, size, m)]
    counts = np.zeros(m, dtype=np.int64)
    counts[init] = 1
    running_sum = p_true[init].sum(axis=0)
    for picks in range(len(init), size):
        trial_loss = _nll_of_true_probs((running_sum[None, :] + p_true) / (picks + 1))
        best = int(np.argmin(trial_loss))  # argmin returns the first (lowest index) minimum
        counts[best] += 1
        running_sum += p_true[best]
    logger.debug(
        "greedy selection: picks %s, val nll %.6f",
        {int(i): int(c) for i, c in enumerate(counts) if c},
        float(_nll_of_true_probs(running_sum / size)),
    )
    return counts / float(size)


# --------------------------------------------------------------------------------------------
# Members and prediction
# --------------------------------------------------------------------------------------------


@dataclass
class Member:
    """One trial in an ensemble.

    Attributes:
        trial_number: the study's trial number.
        weight: the weight of its probabilities in the average (positive).
        params: the trial's hyperparameters (what ``Trainer.build_network`` receives).
        val_score: the trial's value of the study objective on validation, if known.
        seed: the seed the trial trained with (the study's seed rule), if known.
    """

    trial_number: int
    weight: float
    params: dict
    val_score: float | None
    seed: int | None = None


def _as_device(device: str | torch.device) -> torch.device:
    """Parses a device string; raises EnsembleError if it is malformed or unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EnsembleError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EnsembleError(f"device {device!r} asked for but CUDA is not available here")
    return dev


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise EnsembleError(f"batch_size must be a positive integer; got {batch_size!r}")
    if batch_size < 1:
        raise EnsembleError(f"batch_size must be a positive integer; got {batch_size!r}")
    return int(batch_size)


def feature_range_of(*arrays: np.ndarray | None) -> tuple[float, float]:
    """The smallest and largest value over ``arrays`` (``None`` entries skipped).

    What an ensemble records as the range of its training features (see :class:`Ensemble`).

    Raises:
        EnsembleError: no non-empty array, or a value is not finite.
    """
    present = [np.asarray(a) for a in arrays if a is not None and np.asarray(a).size]
    if not present:
        raise EnsembleError("feature_range_of needs at least one non-empty array")
    low = min(float(np.min(a)) for a in present)
    high = max(float(np.max(a)) for a in present)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise EnsembleError(f"training features are not finite: range [{low}, {high}]")
    return low, high


def _check_feature_range(value: Any, where: str) -> tuple[float, float] | None:
    """``(min, max)`` as floats, ``None`` kept; raises EnsembleError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = (value.get("min"), value.get("max"))
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise EnsembleError(
            f"{where}: feature_range must be (min, max) numbers; got {value!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise EnsembleError(
            f"{where}: feature_range must be finite with min <= max; got [{low}, {high}]"
        )
    return low, high


def _accepted_range(feature_range: tuple[float, float]) -> tuple[float, float]:
    """The input range accepted for training features spanning ``feature_range``."""
    low, high = feature_range
    # The absolute term keeps a (degenerate) zero-width range from refusing rounding noise.
    margin = FEATURE_RANGE_MARGIN * (high - low) + 1e-6 * max(1.0, abs(low), abs(high))
    return low - margin, high + margin


def _fmt_range(low: float, high: float) -> str:
    return f"[{low:.4g}, {high:.4g}]"


def _integer_input_error(dtype: np.dtype, feature_range: tuple[float, float] | None) -> str:
    """The one-line message for integer features: the networks never saw unscaled values."""
    trained = (
        f"the training features spanned {_fmt_range(*feature_range)}"
        if feature_range is not None
        else "MNIST and uint8 .npz pixels were divided by 255 into [0, 1]"
    )
    if dtype == np.uint8:
        how = "if these are 0-255 pixels, pass x.astype(np.float32) / 255"
    else:
        how = "convert with x.astype(np.float32) after scaling as the training data was"
    return (
        f"expected float features scaled like the training data ({trained}); got {dtype} "
        f"input - {how}"
    )


def _validate_input(
    x: Any, n_features: int, feature_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Turns model input into a C-contiguous float32 (n, n_features) array or raises.

    Accepts numpy arrays, torch tensors and anything ``np.asarray`` understands (e.g. a pandas
    DataFrame of numeric columns), of a float dtype. ``(n, *image_shape)`` input is flattened
    when the trailing dimensions hold exactly ``n_features`` values.

    Integer dtypes are refused: the networks were trained on scaled float features, so raw
    uint8 pixels (0-255) would be accepted and silently mispredicted. With ``feature_range``
    (the training features' min and max), float input whose values lie far outside it (see
    :data:`FEATURE_RANGE_MARGIN`) is refused for the same reason.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # bfloat16/float16 have no numpy twin worth keeping
        x = t.cpu().numpy()
    elif hasattr(x, "to_numpy"):  # pandas DataFrame/Series without importing pandas
        x = x.to_numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise EnsembleError(f"input cannot be read as an array: {exc}") from None
    if np.issubdtype(arr.dtype, np.integer):
        raise EnsembleError(_integer_input_error(arr.dtype, feature_range))
    if not np.issubdtype(arr.dtype, np.floating):
        raise EnsembleError(f"input must be float features; got dtype {arr.dtype}")
    if arr.size == 0:
        raise EnsembleError(f"input is empty: shape {arr.shape}")
    if arr.ndim < 2:
        raise EnsembleError(
            f"input must be 2-D (n_samples, {n_features} features); got shape {arr.shape}"
        )
    if arr.ndim > 2:
        per_row = math.prod(arr.shape[1:])
        if per_row != n_features:
            raise EnsembleError(
                f"wrong number of features: expected {n_features} per sample, got shape "
                f"{arr.shape} ({per_row} values per sample)"
            )
        arr = arr.reshape(arr.shape[0], n_features)
    elif arr.shape[1] != n_features:
        raise EnsembleError(f"wrong number of features: expected {n_features}, got {arr.shape[1]}")
    if not np.isfinite(arr).all():  # one pass in the common case; count only on failure
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise EnsembleError(
            f"input contains {n_nan} NaN and {n_inf} inf values; all values must be finite"
        )
    if arr.dtype.itemsize > 4:
        # float64 values beyond float32's range would silently become inf in the cast.
        n_big = int((np.abs(arr) > np.finfo(np.float32).max).sum())
        if n_big:
            raise EnsembleError(f"input has {n_big} values that overflow float32 (|x| > 3.4e38)")
    if feature_range is not None:
        _check_input_range(arr, feature_range)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_input_range(arr: np.ndarray, feature_range: tuple[float, float]) -> None:
    """Refuses input whose values lie far outside the training features' range."""
    low, high = float(arr.min()), float(arr.max())
    ok_low, ok_high = _accepted_range(feature_range)
    if ok_low <= low and high <= ok_high:
        return
    outside = ((arr < ok_low) | (arr > ok_high)).any(axis=1)
    hint = (
        "; if these are 0-255 pixels, divide by 255"
        if high > 2 * ok_high and feature_range[1] <= 1.0
        else ""
    )
    raise EnsembleError(
        f"input values span {_fmt_range(low, high)} but the training features spanned "
        f"{_fmt_range(*feature_range)} (accepted {_fmt_range(ok_low, ok_high)}; "
        f"{int(outside.sum())} of {len(arr)} rows outside): scale the input like the "
        f"training data{hint}"
    )


def _checked_softmax(logits: Any, rows: int, n_classes: int | None, who: str) -> torch.Tensor:
    """Softmax over classes of one batch of logits, after checking their shape.

    ``n_classes=None`` accepts any class count (the first batch of member_val_probs).
    """
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
    if (
        shape is None
        or len(shape) != 2
        or shape[0] != rows
        or (n_classes is not None and shape[1] != n_classes)
    ):
        expected = f"({rows}, {n_classes if n_classes is not None else 'n_classes'})"
        got = shape if shape is not None else type(logits).__name__
        raise EnsembleError(f"{who} returned logits of shape {got}; expected {expected}")
    return torch.softmax(logits.float(), dim=1)


def member_val_probs(
    networks: Sequence[nn.Module],
    x_val: np.ndarray,
    batch_size: int = 4096,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Each network's class probabilities on the validation set, computed once for selection.

    Args:
        networks: the candidate networks (logits out), best-first; put into eval mode here.
        x_val: validation features, shape ``(n_val, n_features)``.
        batch_size: rows per forward pass.
        device: where to run the networks (they are moved there).

    Returns:
        float32 array of shape ``(len(networks), n_val, n_classes)``.
    """
    if len(networks) == 0:
        raise EnsembleError("member_val_probs needs at least one network")
    batch_size = _check_batch_size(batch_size)
    dev = _as_device(device)
    x_arr = np.asarray(x_val)
    if x_arr.ndim < 2:
        raise EnsembleError(f"x_val must be at least 2-D; got shape {x_arr.shape}")
    x = _validate_input(x_arr, math.prod(x_arr.shape[1:]))
    out: np.ndarray | None = None
    with torch.inference_mode():
        for i, net in enumerate(networks):
            net.eval().to(dev)
            for start in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(x[start : start + batch_size]).to(dev)
                n_classes = None if out is None else out.shape[2]
                probs = _checked_softmax(net(xb), xb.shape[0], n_classes, f"network {i}")
                if out is None:
                    out = np.empty((len(networks), x.shape[0], probs.shape[1]), np.float32)
                out[i, start : start + xb.shape[0]] = probs.cpu().numpy()
    assert out is not None
    return out


class Ensemble:
    """A weighted average of the softmax outputs of several trained networks.

    Args:
        members: one :class:`Member` per network, same order.
        networks: the members' networks with their weights loaded (logits out). They are put
            into eval mode and moved to ``device``.
        n_features: number of input features the networks expect.
        n_classes: number of classes they predict.
        class_names: optional names of the classes, index-aligned.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:0"`` ...
        feature_range: ``(min, max)`` of the features the networks were trained on (see
            :func:`feature_range_of`). Prediction then refuses input far outside it (unscaled
            pixels, say); ``None`` (ensembles saved before the range was recorded) skips that
            check. Integer input is refused either way.

    Weights must be positive and finite; they are normalised to sum to 1 for prediction (the
    ``members`` keep the weights as given).
    """

    def __init__(
        self,
        members: Sequence[Member],
        networks: Sequence[nn.Module],
        n_features: int,
        n_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        feature_range: tuple[float, float] | None = None,
    ) -> None:
        if len(members) == 0:
            raise EnsembleError("an ensemble needs at least one member")
        if len(members) != len(networks):
            raise EnsembleError(
                f"got {len(members)} members but {len(networks)} networks; they must pair up"
            )
        if int(n_features) < 1 or int(n_classes) < 2:
            raise EnsembleError(
                f"need n_features >= 1 and n_classes >= 2; got {n_features} and {n_classes}"
            )
        weights = np.array([float(m.weight) for m in members], dtype=np.float64)
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise EnsembleError(
                f"member weights must be finite and > 0 (drop zero-weight candidates); "
                f"got {weights.tolist()}"
            )
        if class_names is not None and len(class_names) != int(n_classes):
            raise EnsembleError(
                f"class_names has {len(class_names)} entries but n_classes is {n_classes}"
            )
        self._members = list(members)
        self._networks = list(networks)
        self._weights = (weights / weights.sum()).tolist()
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.feature_range = _check_feature_range(feature_range, "Ensemble")
        self._device = torch.device("cpu")
        for net in self._networks:
            net.eval()
        self.to(device)

    @property
    def members(self) -> list[Member]:
        """The members, in the order of the networks."""
        return list(self._members)

    @property
    def networks(self) -> list[nn.Module]:
        """The members' networks (eval mode, on :attr:`device`)."""
        return list(self._networks)

    @property
    def weights(self) -> np.ndarray:
        """Normalised member weights, shape ``(n_members,)``, summing to 1."""
        return np.array(self._weights)

    @property
    def device(self) -> torch.device:
        """Where the networks live and prediction runs."""
        return self._device

    def to(self, device: str | torch.device) -> Ensemble:
        """Moves every network to ``device`` and returns ``self``."""
        dev = _as_device(device)
        for net in self._networks:
            net.to(dev)
        self._device = dev
        return self

    def predict_proba(self, x: Any, *, batch_size: int = 4096) -> np.ndarray:
        """Weighted average of the members' class probabilities.

        Args:
            x: features, a numpy array or torch tensor of shape ``(n, n_features)`` or
                ``(n, *image_shape)``; float, all finite, scaled like the training data
                (MNIST: pixels / 255).
            batch_size: rows per forward pass (memory bound; the result does not depend on it).

        Returns:
            float32 array of shape ``(n, n_classes)``; rows sum to 1.

        Raises:
            EnsembleError: the input is empty, not float (integers included), the wrong
                shape, not finite, or far outside :attr:`feature_range`.
        """
        batch_size = _check_batch_size(batch_size)
        arr = _validate_input(x, self.n_features, self.feature_range)
        out = np.empty((arr.shape[0], self.n_classes), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, arr.shape[0], batch_size):
                xb = torch.from_numpy(arr[start : start + batch_size]).to(self._device)
                acc = torch.zeros(xb.shape[0], self.n_classes, device=self._device)
                for member, net, weight in zip(
                    self._members, self._networks, self._weights, strict=True
                ):
                    who = f"trial {member.trial_number}"
                    probs = _checked_softmax(net(xb), xb.shape[0], self.n_classes, who)
                    acc.add_(probs, alpha=weight)
                out[start : start + xb.shape[0]] = acc.cpu().numpy()
        return out

    def predict(self, x: Any, *, batch_size: int = 4096) -> np.ndarray:
        """Most probable class index per sample, int64 array of shape ``(n,)``."""
        return np.argmax(self.predict_proba(x, batch_size=batch_size), axis=1).astype(np.int64)

    def evaluate(self, x: Any, y: np.ndarray, *, batch_size: int = 4096) -> dict[str, float]:
        """Accuracy, log-loss (``nll``) and 15-bin ECE (``ece``) of the ensemble on ``(x, y)``."""
        probs = self.predict_proba(x, batch_size=batch_size)
        return {
            "accuracy": accuracy(probs, y),
            "nll": log_loss(probs, y),
            "ece": expected_calibration_error(probs, y),
        }

    def __repr__(self) -> str:
        trials = [m.trial_number for m in self._members]
        return (
            f"Ensemble(trials={trials}, weights={[round(w, 4) for w in self._weights]}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"feature_range={self.feature_range}, device={self._device})"
        )


# --------------------------------------------------------------------------------------------
# Rebuilding networks and the members directory
# --------------------------------------------------------------------------------------------


def resolve_trainer_ref(ref: str) -> Trainer:
    """Finds the trainer named by ``ref`` (a built-in name such as ``mlp``, or ``module:object``).

    Uses ``searchsvc.registry.resolve_trainer`` (imported lazily), so a members directory
    resolves trainers exactly as a study file does. If that module cannot be imported, a
    ``module:object`` ref is still imported here (a class is instantiated without arguments).

    Raises:
        EnsembleError: the trainer cannot be found or has no ``build_network``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise EnsembleError(f"trainer reference must be a non-empty string; got {ref!r}")
    try:
        from searchsvc.registry import resolve_trainer
    except ImportError as exc:
        if ":" not in ref:
            raise EnsembleError(
                f"cannot resolve trainer {ref!r}: searchsvc.registry is not importable ({exc})"
            ) from None
        obj = _import_object(ref)
    else:
        try:
            obj = resolve_trainer(ref)
        except SearchsvcError as exc:
            raise EnsembleError(f"cannot rebuild ensemble members: {exc}") from exc
    if not callable(getattr(obj, "build_network", None)):
        raise EnsembleError(f"trainer {ref!r} resolved to {obj!r}, which has no build_network()")
    return obj


def _import_object(ref: str) -> Any:
    """Imports ``module:attr.path``; instantiates it if it is a class."""
    module_name, _, attr_path = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnsembleError(f"cannot import trainer module {module_name!r}: {exc}") from None
    try:
        for attr in attr_path.split("."):
            obj = getattr(obj, attr)
    except AttributeError:
        raise EnsembleError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    return obj() if isinstance(obj, type) else obj


def rebuild_network(
    trainer: Trainer,
    params: Mapping[str, Any],
    n_features: int,
    n_classes: int,
    state_dict: Mapping[str, Any],
    *,
    who: str = "member",
) -> nn.Module:
    """Builds the network for ``params`` and loads ``state_dict`` into it (strict), eval mode.

    Raises:
        EnsembleError: building fails or the state dict does not fit the network.
    """
    try:
        net = trainer.build_network(dict(params), int(n_features), int(n_classes))
    except Exception as exc:  # a trainer's own errors: report which member and why
        raise EnsembleError(f"{who}: build_network failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise EnsembleError(f"{who}: build_network returned {type(net).__name__}, not nn.Module")
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EnsembleError(f"{who}: state dict does not fit the network: {first_line}") from exc
    return net.eval()


def _member_dirname(index: int, trial_number: int) -> str:
    return f"member_{index:03d}_trial_{trial_number}"


def _json_default(obj: Any) -> Any:
    """Lets numpy scalars from Optuna params pass through json.dump."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_members_dir(
    entries: Sequence[tuple[Member, str | os.PathLike[str]]],
    out_dir: str | os.PathLike[str],
    *,
    trainer_ref: str,
    n_features: int,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    feature_range: tuple[float, float] | None = None,
) -> Path:
    """Writes a members directory from saved state-dict files (e.g. each trial's
    ``model/state_dict.pt``), copying them in.

    The manifest ``members.json`` is::

        {"format_version": 1, "trainer": "<ref>", "n_features": 784, "n_classes": 10,
         "class_names": [...] | null,
         "feature_range": {"min": 0.0, "max": 1.0} | null,
         "members": [{"trial_number": 12, "weight": 0.4, "params": {...},
                      "val_score": 0.31 | null, "trainer": "<ref>",
                      "dir": "member_000_trial_12", "state_dict": "state_dict.pt",
                      "params_file": "params.json"}, ...]}

    Args:
        entries: ``(member, path to its torch-saved state dict)`` pairs, weights > 0.
        out_dir: the directory to create (may exist if empty).
        trainer_ref: how to find the trainer at load time (``mlp`` or ``module:object``).
        n_features: input features of the networks.
        n_classes: classes they predict.
        class_names: optional class names.
        feature_range: ``(min, max)`` of the training features (see
            :func:`feature_range_of`), so that prediction can refuse unscaled input.

    Returns:
        ``out_dir`` as a Path.
    """
    feature_range = _check_feature_range(feature_range, "write_members_dir")
    if len(entries) == 0:
        raise EnsembleError("cannot write an ensemble with no members")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"members directory {out} already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    manifest_members = []
    for index, (member, state_path) in enumerate(entries):
        state_path = Path(state_path)
        if not state_path.is_file():
            raise EnsembleError(f"trial {member.trial_number}: no state dict at {state_path}")
        if not (math.isfinite(float(member.weight)) and member.weight > 0):
            raise EnsembleError(f"trial {member.trial_number}: weight must be > 0")
        sub = _member_dirname(index, member.trial_number)
        (out / sub).mkdir()
        shutil.copyfile(state_path, out / sub / "state_dict.pt")
        (out / sub / "params.json").write_text(
            json.dumps(member.params, indent=2, sort_keys=True, default=_json_default)
        )
        entry = asdict(member)
        entry.update(trainer=trainer_ref, dir=sub, state_dict="state_dict.pt")
        entry["params_file"] = "params.json"
        manifest_members.append(entry)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "trainer": trainer_ref,
        "n_features": int(n_features),
        "n_classes": int(n_classes),
        "class_names": list(class_names) if class_names is not None else None,
        # Optional key: manifests without it (older ensembles) still load, with no range check.
        "feature_range": (
            None if feature_range is None else {"min": feature_range[0], "max": feature_range[1]}
        ),
        "members": manifest_members,
    }
    (out / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
    )
    logger.info("wrote %d ensemble members to %s", len(entries), out)
    return out


def save_members_dir(
    ensemble: Ensemble, out_dir: str | os.PathLike[str], *, trainer_ref: str
) -> Path:
    """Writes an in-memory :class:`Ensemble` as a members directory (see write_members_dir).

    Args:
        ensemble: the ensemble; its networks' current weights are saved (moved to CPU).
        out_dir: the directory to create (may exist if empty).
        trainer_ref: how to find the trainer that builds every member's network.

    Returns:
        ``out_dir`` as a Path.
    """
    with tempfile.TemporaryDirectory(prefix="searchsvc-members-") as staging:
        entries = []
        for index, (member, net) in enumerate(
            zip(ensemble.members, ensemble.networks, strict=True)
        ):
            path = Path(staging) / f"{index}.pt"
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
            entries.append((member, path))
        return write_members_dir(
            entries,
            out_dir,
            trainer_ref=trainer_ref,
            n_features=ensemble.n_features,
            n_classes=ensemble.n_classes,
            class_names=ensemble.class_names,
            feature_range=ensemble.feature_range,
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks ``members.json`` of a members directory (see write_members_dir)."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise EnsembleError(f"no {MANIFEST_NAME} in {path}; not a members directory") from None
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{manifest_path} is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION:
        raise EnsembleError(
            f"{manifest_path}: unsupported format_version {version!r} (expected "
            f"{MANIFEST_VERSION})"
        )
    for key in ("n_features", "n_classes", "members"):
        if key not in manifest:
            raise EnsembleError(f"{manifest_path}: missing key {key!r}")
    if not manifest["members"]:
        raise EnsembleError(f"{manifest_path}: no members")
    _check_feature_range(manifest.get("feature_range"), f"{manifest_path}")
    return manifest


def load_members_dir(
    path: str | os.PathLike[str],
    *,
    resolver: TrainerResolver | None = None,
    device: str | torch.device = "cpu",
) -> Ensemble:
    """Rebuilds an :class:`Ensemble` from a members directory.

    Args:
        path: the directory written by :func:`write_members_dir` / :func:`save_members_dir`.
        resolver: maps a trainer reference to a trainer; default :func:`resolve_trainer_ref`.
        device: where to put the networks.

    Returns:
        The ensemble, networks in eval mode.

    Raises:
        EnsembleError: the manifest or a state dict is missing or does not fit.
    """
    root = Path(path)
    manifest = read_manifest(root)
    resolve = resolver or resolve_trainer_ref
    trainers: dict[str, Trainer] = {}
    members: list[Member] = []
    networks: list[nn.Module] = []
    for entry in manifest["members"]:
        member = Member(
            trial_number=int(entry["trial_number"]),
            weight=float(entry["weight"]),
            params=dict(entry["params"]),
            val_score=None if entry.get("val_score") is None else float(entry["val_score"]),
            seed=None if entry.get("seed") is None else int(entry["seed"]),
        )
        ref = entry.get("trainer") or manifest.get("trainer")
        if ref not in trainers:
            trainers[ref] = resolve(ref)
        state_path = root / entry["dir"] / entry.get("state_dict", "state_dict.pt")
        who = f"trial {member.trial_number}"
        try:
            # weights_only: a state dict is tensors only, and this refuses arbitrary pickles.
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise EnsembleError(f"{who}: missing state dict {state_path}") from None
        except Exception as exc:
            raise EnsembleError(f"{who}: cannot load {state_path}: {exc}") from exc
        networks.append(
            rebuild_network(
                trainers[ref],
                member.params,
                manifest["n_features"],
                manifest["n_classes"],
                state,
                who=who,
            )
        )
        members.append(member)
    return Ensemble(
        members,
        networks,
        manifest["n_features"],
        manifest["n_classes"],
        manifest.get("class_names"),
        device=device,
        feature_range=_check_feature_range(
            manifest.get("feature_range"), f"{root / MANIFEST_NAME}"
        ),
    )
