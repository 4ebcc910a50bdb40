"""The MLP trainer's params: names, defaults, validation.

Every key is optional. Unknown keys raise ``ValueError`` naming the key. ``width_K`` for
K > ``n_layers`` is ignored, so a search space may define widths for its deepest networks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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

_WIDTH_KEY = re.compile(r"width_([1-9][0-9]*)")
_CHOICE_KEYS = (
    "activation", "init", "norm", "optimizer", "lr_schedule", "keep_weights", "precision",
)  # fmt: skip
_FLAGS = ("diagnostics",)

Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout"]
Init = Literal[
    "zeros", "normal", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
    "orthogonal", "rbm",
]  # fmt: skip
Norm = Literal["none", "batch", "layer"]
Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
LRSchedule = Literal["none", "cosine", "step"]
KeepWeights = Literal["best", "last"]
Precision = Literal["float32", "bfloat16"]
_Probability = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class MLPParams(BaseModel):
    """Validated MLP params with every default filled in: the one place they are written.

    ``init`` defaults to ``he_normal`` for the ReLU family and maxout, ``xavier_uniform`` for
    sigmoid and tanh. ``momentum`` is ``None`` when not given: 0.9 for ``momentum``/``nesterov``,
    plain RMSprop (no momentum) for ``rmsprop``; it is ignored by the other optimisers.
    ``rbm_*`` configure the ``rbm`` init (greedy RBM pre-training, :mod:`trainers.mlp.rbm`: it
    rejects maxout) and are ignored by the other schemes. ``width`` is every hidden layer's
    width unless ``width_K`` sets layer K's; ``widths`` holds the result.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_layers: int = Field(2, ge=0, description="hidden layers (0: softmax regression)")
    width: int = Field(
        256, ge=1, description="units of every hidden layer without its own width_K"
    )
    layer_widths: dict[int, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="width_K: units of hidden layer K"
    )
    activation: Activation = Field("relu", description="the hidden units' nonlinearity")
    leaky_slope: _NonNegative = Field(0.01, description="negative slope of leaky_relu")
    maxout_pieces: int = Field(2, ge=1, description="linear pieces per maxout unit")
    init: Init = Field(
        "he_normal",
        description="weight init (biases zero; the output layer the same scheme, gain 1 for "
        "he_*, xavier_uniform for rbm)",
    )
    init_std: _Positive = Field(0.01, description="std of the normal init")
    rbm_epochs: int = Field(3, ge=1, description="rbm init: CD epochs per layer")
    rbm_lr: _Positive = Field(0.05, description="rbm init: CD learning rate")
    rbm_k: int = Field(1, ge=1, description="rbm init: Gibbs steps of CD-k")
    rbm_samples: int = Field(
        10000, ge=1, description="rbm init: training samples it pre-trains on"
    )
    dropout: _Probability = Field(0.0, description="inverted dropout after each hidden activation")
    input_dropout: _Probability = Field(0.0, description="inverted dropout on the inputs")
    norm: Norm = Field(
        "none", description="batch or layer normalisation, after the linear, before the activation"
    )
    optimizer: Optimizer = Field("adam", description="the optimiser")
    lr: _Positive = Field(1e-3, description="learning rate")
    momentum: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] | None = Field(
        None,
        description="momentum (0.9 for momentum and nesterov; rmsprop uses it only if given)",
    )
    weight_decay: _NonNegative = Field(
        0.0, description="L2 through the optimiser (linear weights only)"
    )
    l1: _NonNegative = Field(0.0, description="loss += l1 * sum |w| (linear weights only)")
    clip_norm: _NonNegative = Field(0.0, description="global gradient-norm clipping (0: off)")
    max_norm: _NonNegative = Field(
        0.0,
        description="max L2 norm of each hidden unit's incoming weights, every step (0: off)",
    )
    lr_schedule: LRSchedule = Field("none", description="cosine (to 0 over max_epochs) or step")
    lr_step_size: int = Field(10, ge=1, description="epochs between step decays")
    lr_gamma: _Positive = Field(0.1, description="step decay factor")
    batch_size: int = Field(128, ge=1, description="minibatch size")
    patience: int = Field(
        5,
        ge=0,
        description="early stopping after this many epochs without a better val_loss (0: off)",
    )
    keep_weights: KeepWeights = Field(
        "best",
        description="the weights a trial keeps: best (its lowest val_loss epoch) or last (the "
        "epoch it ends at, e.g. the end of a decaying schedule)",
    )
    precision: Precision = Field(
        "float32",
        description="bfloat16: the training pass's matmuls in bfloat16 (autocast; weights, "
        "gradients and optimiser state stay float32; evaluations in float32)",
    )
    diagnostics: bool = Field(True, description="per-layer metrics and activation histograms")

    @property
    def widths(self) -> tuple[int, ...]:
        """The width of each hidden layer."""
        return tuple(self.layer_widths.get(i, self.width) for i in range(1, self.n_layers + 1))

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, given: Any) -> Any:
        """Unset (None) keys take their default, choices are case-insensitive, ``width_K``
        keys gather into ``layer_widths``, and ``init``'s default follows the activation."""
        data: dict[str, Any] = {}
        widths: dict[Any, Any] = {}
        for key, value in dict(given).items():
            if value is None:
                continue
            match = _WIDTH_KEY.fullmatch(str(key))
            if match:
                widths[int(match.group(1))] = value
            elif isinstance(value, bool) and key not in _FLAGS:
                data[key] = _NotANumber(value)  # a YAML `yes` is no number: refuse it
            else:
                data[key] = value.strip().lower() if key in _CHOICE_KEYS and isinstance(
                    value, str) else value  # fmt: skip
        if widths:
            data["layer_widths"] = widths
        data.setdefault("init", default_init(str(data.get("activation", "relu"))))
        return data

    @model_validator(mode="after")
    def _combinations(self) -> MLPParams:
        if self.init == "rbm" and self.activation == "maxout":
            # A maxout layer has width * pieces outputs; an RBM has one hidden unit per unit.
            raise ValueError(
                "init rbm pairs with sigmoid (classic), tanh or the ReLU family, not maxout"
            )
        if self.optimizer == "nesterov" and self.momentum == 0.0:
            raise ValueError("momentum: nesterov needs momentum > 0")
        return self


class _NotANumber:
    """A boolean given where a number is expected; pydantic would read it as 0 or 1."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


# Every accepted key (besides width_1, width_2, ...), in documentation order.
PARAM_NAMES: tuple[str, ...] = tuple(k for k in MLPParams.model_fields if k != "layer_widths")
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INITS: tuple[str, ...] = get_args(Init)
NORMS: tuple[str, ...] = get_args(Norm)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)


def parse_params(params: Mapping[str, Any]) -> MLPParams:
    """Validate ``params`` and fill in defaults.

    Raises:
        ValueError: one line naming the key at fault and the value received, in the study
            file's style (``dropout: must be < 1.0, got 1.5``).
    """
    try:
        return MLPParams.model_validate(params)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None


def default_init(activation: str) -> str:
    """The ``init`` used when none is given: Xavier for sigmoid/tanh, He for the rest."""
    return "xavier_uniform" if activation in ("sigmoid", "tanh") else "he_normal"


_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<",
           "less_than_equal": "<="}  # fmt: skip


def _first_problem(exc: ValidationError) -> str:
    """The first error as one line: the key, what was expected, what was given."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = f"width_{loc[1]}" if loc[:1] == ["layer_widths"] and len(loc) > 1 else ".".join(loc)
    kind, ctx, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        return f"unknown MLP param {key!r}; known: {', '.join(PARAM_NAMES)}, width_1, width_2, ..."
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"{key}: must be {_BOUNDS[kind]} {bound}, got {given}"
    if kind == "literal_error":
        expected = ", ".join(get_args(MLPParams.model_fields[key].annotation))
        return f"{key}: unknown value {given!r}; expected one of {expected}"
    if kind == "finite_number":
        return f"{key}: must be finite, got {given!r}"
    if kind.startswith("int_"):
        return f"{key}: expected an integer, got {given!r}"
    if kind.startswith("float_"):
        return f"{key}: expected a number, got {given!r}"
    if kind.startswith("bool_"):
        return f"{key}: expected true or false, got {given!r}"
    message = error["msg"].removeprefix("Value error, ")
    return message if not key else f"{key}: {message}" if ":" not in message else message
