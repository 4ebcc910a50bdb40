"""The MLP trainer's params: names, defaults, validation.

Every key is optional. Unknown keys raise ``ValueError`` naming the key. ``width_K`` for
K > ``n_layers`` is ignored, so a search space may define widths for its deepest networks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "LR_SCHEDULES",
    "MLPParams",
    "NORMS",
    "OPTIMIZERS",
    "PARAM_NAMES",
    "default_init",
    "parse_params",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout")
INITS = (
    "zeros",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "he_uniform",
    "he_normal",
    "orthogonal",
    "rbm",
)
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "step")

# Every accepted key (besides width_1, width_2, ...), in documentation order.
PARAM_NAMES: tuple[str, ...] = (
    "n_layers",
    "width",
    "activation",
    "leaky_slope",
    "maxout_pieces",
    "init",
    "init_std",
    "rbm_epochs",
    "rbm_lr",
    "rbm_k",
    "rbm_samples",
    "dropout",
    "input_dropout",
    "norm",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "l1",
    "clip_norm",
    "max_norm",
    "lr_schedule",
    "lr_step_size",
    "lr_gamma",
    "batch_size",
    "patience",
    "diagnostics",
)
_WIDTH_KEY = re.compile(r"width_([1-9][0-9]*)")


@dataclass(frozen=True)
class MLPParams:
    """Validated MLP params with every default filled in.

    ``init`` defaults to ``he_normal`` for the ReLU family and maxout, ``xavier_uniform`` for
    sigmoid and tanh. ``momentum`` is ``None`` when not given: 0.9 for ``momentum``/``nesterov``,
    plain RMSprop (no momentum) for ``rmsprop``; it is ignored by the other optimisers.
    ``rbm_*`` configure the ``rbm`` init (greedy RBM pre-training, :mod:`trainers.mlp.rbm`: it
    rejects maxout) and are ignored by the other schemes.
    """

    n_layers: int = 2
    widths: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    leaky_slope: float = 0.01
    maxout_pieces: int = 2
    init: str = "he_normal"
    init_std: float = 0.01
    rbm_epochs: int = 3
    rbm_lr: float = 0.05
    rbm_k: int = 1
    rbm_samples: int = 10000
    dropout: float = 0.0
    input_dropout: float = 0.0
    norm: str = "none"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None
    weight_decay: float = 0.0
    l1: float = 0.0
    clip_norm: float = 0.0
    max_norm: float = 0.0
    lr_schedule: str = "none"
    lr_step_size: int = 10
    lr_gamma: float = 0.1
    batch_size: int = 128
    patience: int = 5
    diagnostics: bool = True


def parse_params(params: Mapping[str, Any]) -> MLPParams:
    """Validate ``params`` and fill in defaults; raises ``ValueError`` naming the bad key."""
    given = dict(params)
    for key in given:
        if _WIDTH_KEY.fullmatch(str(key)):
            continue
        if key not in PARAM_NAMES:
            raise ValueError(
                f"unknown MLP param {key!r}; known: {', '.join(PARAM_NAMES)}, "
                "width_1, width_2, ..."
            )

    n_layers = _int(given, "n_layers", 2, low=0)
    width = _int(given, "width", 256, low=1)
    widths = tuple(_int(given, f"width_{i}", width, low=1) for i in range(1, n_layers + 1))
    activation = _choice(given, "activation", "relu", ACTIVATIONS)
    init = _choice(given, "init", default_init(activation), INITS)
    if init == "rbm" and activation == "maxout":
        # A maxout layer has width * pieces outputs; an RBM has one hidden unit per unit.
        raise ValueError(
            "init rbm pairs with sigmoid (classic), tanh or the ReLU family, not maxout"
        )
    optimizer = _choice(given, "optimizer", "adam", OPTIMIZERS)
    momentum = _float(given, "momentum", None, low=0.0, high=1.0, high_open=True)
    if optimizer == "nesterov" and momentum == 0.0:
        raise ValueError("momentum: nesterov needs momentum > 0")
    return MLPParams(
        n_layers=n_layers,
        widths=widths,
        activation=activation,
        leaky_slope=_float(given, "leaky_slope", 0.01, low=0.0),
        maxout_pieces=_int(given, "maxout_pieces", 2, low=1),
        init=init,
        init_std=_float(given, "init_std", 0.01, low=0.0, low_open=True),
        rbm_epochs=_int(given, "rbm_epochs", 3, low=1),
        rbm_lr=_float(given, "rbm_lr", 0.05, low=0.0, low_open=True),
        rbm_k=_int(given, "rbm_k", 1, low=1),
        rbm_samples=_int(given, "rbm_samples", 10000, low=1),
        dropout=_float(given, "dropout", 0.0, low=0.0, high=1.0, high_open=True),
        input_dropout=_float(given, "input_dropout", 0.0, low=0.0, high=1.0, high_open=True),
        norm=_choice(given, "norm", "none", NORMS),
        optimizer=optimizer,
        lr=_float(given, "lr", 1e-3, low=0.0, low_open=True),
        momentum=momentum,
        weight_decay=_float(given, "weight_decay", 0.0, low=0.0),
        l1=_float(given, "l1", 0.0, low=0.0),
        clip_norm=_float(given, "clip_norm", 0.0, low=0.0, none_is=0.0),
        max_norm=_float(given, "max_norm", 0.0, low=0.0, none_is=0.0),
        lr_schedule=_choice(given, "lr_schedule", "none", LR_SCHEDULES),
        lr_step_size=_int(given, "lr_step_size", 10, low=1),
        lr_gamma=_float(given, "lr_gamma", 0.1, low=0.0, low_open=True),
        batch_size=_int(given, "batch_size", 128, low=1),
        patience=_int(given, "patience", 5, low=0),
        diagnostics=_bool(given, "diagnostics", True),
    )


def default_init(activation: str) -> str:
    """The ``init`` used when none is given: Xavier for sigmoid/tanh, He for the rest."""
    return "xavier_uniform" if activation in ("sigmoid", "tanh") else "he_normal"


def _int(given: Mapping[str, Any], key: str, default: int, *, low: int) -> int:
    value = given.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected an integer, got {value!r}") from None
    # Samplers may hand integers over as floats (e.g. 256.0); anything fractional is an error.
    if not as_float.is_integer():
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    result = int(as_float)
    if result < low:
        raise ValueError(f"{key}: must be >= {low}, got {result}")
    return result


def _float(
    given: Mapping[str, Any],
    key: str,
    default: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    none_is: float | None = None,
) -> Any:
    if key not in given:
        return default
    value = given[key]
    if value is None:
        if none_is is None:
            return default
        return none_is
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"{key}: must be finite, got {value!r}")
    if low is not None and (result < low or (low_open and result == low)):
        raise ValueError(f"{key}: must be {'>' if low_open else '>='} {low}, got {result}")
    if high is not None and (result > high or (high_open and result == high)):
        raise ValueError(f"{key}: must be {'<' if high_open else '<='} {high}, got {result}")
    return result


def _choice(given: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = given.get(key, default)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(f"{key}: unknown value {value!r}; expected one of {', '.join(choices)}")
    return text


def _bool(given: Mapping[str, Any], key: str, default: bool) -> bool:
    value = given.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{key}: expected true or false, got {value!r}")
