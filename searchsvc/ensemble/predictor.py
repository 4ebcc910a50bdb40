"""Prediction with an ensemble of trained networks (pure numpy/torch): the only place for
:class:`Ensemble`, its :class:`Member` records, the device and batch checks, the checks of
model input (float dtype, shape, finite values, the training features' range) and the
candidates' validation probabilities (:func:`member_val_probs`) that selection works on."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from searchsvc.ensemble.metrics import scores
from searchsvc.errors import EnsembleError

__all__ = ["FEATURE_RANGE_MARGIN", "Ensemble", "Member", "feature_range_of", "member_val_probs"]

FEATURE_RANGE_MARGIN = 0.5
"""Slack around the training features' range, as a fraction of its width, before input is
refused: unseen samples may go a little past the training extremes, while unscaled pixels
(0-255 against [0, 1]) are hundreds of widths away."""


@dataclass
class Member:
    """One trial in an ensemble.

    Attributes:
        trial_number: the study's trial number.
        weight: the weight of its probabilities in the average (positive).
        params: the trial's hyperparameters (what ``Trainer.build_network`` receives).
        val_score: the trial's value of the study objective on validation, if known.
        seed: the seed the trial trained with (the study's seed rule), if known.
        reseed: 0 for the trial's own training, k for its k-th reseed (a new seed).
        best_epoch: the epoch whose weights these are (what a refit trains for), if known.
    """

    trial_number: int
    weight: float
    params: dict
    val_score: float | None
    seed: int | None = None
    reseed: int = 0
    best_epoch: int | None = None

    @property
    def key(self) -> str:
        """``"7"``: trial 7; ``"7-reseed-1"``: its first reseed."""
        number = self.trial_number
        return f"{number}-reseed-{self.reseed}" if self.reseed else str(number)


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
    is_int = isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
    if not is_int or batch_size < 1:
        raise EnsembleError(f"batch_size must be a positive integer; got {batch_size!r}")
    return int(batch_size)


def feature_range_of(*arrays: np.ndarray | None) -> tuple[float, float]:
    """The smallest and largest value over ``arrays`` (``None`` entries skipped): what an
    ensemble records as the range of its training features (see :class:`Ensemble`).

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
    DataFrame of numeric columns), of a float dtype; ``(n, *image_shape)`` input is flattened
    when the trailing dimensions hold exactly ``n_features`` values. Integer dtypes are refused:
    the networks were trained on scaled float features, so raw uint8 pixels (0-255) would be
    accepted and silently mispredicted. With ``feature_range`` (the training features' min and
    max), float input far outside it (see :data:`FEATURE_RANGE_MARGIN`) is refused likewise.
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
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
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
    pixels = high > 2 * ok_high and feature_range[1] <= 1.0
    hint = "; if these are 0-255 pixels, divide by 255" if pixels else ""
    raise EnsembleError(
        f"input values span {_fmt_range(low, high)} but the training features spanned "
        f"{_fmt_range(*feature_range)} (accepted {_fmt_range(ok_low, ok_high)}; "
        f"{int(outside.sum())} of {len(arr)} rows outside): scale the input like the "
        f"training data{hint}"
    )


def _checked_softmax(logits: Any, rows: int, n_classes: int | None, who: str) -> torch.Tensor:
    """Softmax over classes of one batch of logits, after checking their shape;
    ``n_classes=None`` accepts any class count (the first batch of member_val_probs)."""
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
        members: one :class:`Member` per network, same order. Weights must be positive and
            finite; they are normalised to sum to 1 for prediction (``members`` keeps them).
        networks: the members' networks with their weights loaded (logits out). They are put
            into eval mode and moved to ``device``.
        n_features: number of input features the networks expect.
        n_classes: number of classes they predict.
        class_names: optional names of the classes, index-aligned.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:0"`` ...
        feature_range: ``(min, max)`` of the training features (:func:`feature_range_of`):
            prediction refuses input far outside it (unscaled pixels, say); ``None`` (saved
            before the range was recorded) skips that check. Integer input is refused anyway.
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
            raise EnsembleError(f"got {len(members)} members but {len(networks)} networks; "
                                "they must pair up")  # fmt: skip
        if int(n_features) < 1 or int(n_classes) < 2:
            raise EnsembleError(f"need n_features >= 1 and n_classes >= 2; got {n_features} "
                                f"and {n_classes}")  # fmt: skip
        weights = np.array([float(m.weight) for m in members], dtype=np.float64)
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise EnsembleError(f"member weights must be finite and > 0 (drop zero-weight "
                                f"candidates); got {weights.tolist()}")  # fmt: skip
        if class_names is not None and len(class_names) != int(n_classes):
            raise EnsembleError(f"class_names has {len(class_names)} entries but n_classes "
                                f"is {n_classes}")  # fmt: skip
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
            x: float features (numpy or torch), all finite, scaled like the training data
                (MNIST: pixels / 255), of shape ``(n, n_features)`` or ``(n, *image_shape)``.
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
        return scores(self.predict_proba(x, batch_size=batch_size), y)

    def __repr__(self) -> str:
        trials = [m.trial_number for m in self._members]
        return (
            f"Ensemble(trials={trials}, weights={[round(w, 4) for w in self._weights]}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"feature_range={self.feature_range}, device={self._device})"
        )
