"""One epoch of the MLP trainer: the minibatch pass, the evaluation, the tensors it uses.

The training loop itself (``trainers.mlp.training``) calls these once per epoch.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from searchsvc.trainer import Dataset
from trainers.mlp.diagnostics import GradNormMeter
from trainers.mlp.layers import MLP
from trainers.mlp.optim import apply_max_norm, l1_penalty, step_function
from trainers.mlp.params import MLPParams

__all__ = [
    "EVAL_BATCH",
    "TRAIN_EVAL_SAMPLES",
    "Tensors",
    "batch_loss",
    "evaluate",
    "to_tensors",
    "train_epoch",
    "train_eval_indices",
    "train_eval_subset",
    "training_autocast",
]

EVAL_BATCH = 8192  # samples per forward pass of evaluate (no gradients, so memory is cheap)


_FINITE_CHECK_EVERY = 50  # batches between divergence checks (each one is a host sync)


TRAIN_EVAL_SAMPLES = 10_000  # size of the fixed training subset train_accuracy is measured on


_TRAIN_EVAL_STREAM = 0x545241494E  # "TRAIN": keeps the subset's draw apart from other streams


def batch_loss(
    model: MLP,
    xb: torch.Tensor,
    yb: torch.Tensor,
    l1: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, cross-entropy, logits) of one minibatch.

    The loss is the mean cross-entropy plus ``l1 * sum |w|`` over the linear weights.
    """
    logits = model(xb)
    ce = F.cross_entropy(logits, yb)
    if l1 > 0:
        return ce + l1 * l1_penalty([layer.weight for layer in model.linears()]), ce, logits
    return ce, ce, logits


@dataclass(frozen=True)
class Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def train_epoch(
    model: MLP,
    optimizer: torch.optim.Optimizer,
    t: Tensors,
    p: MLPParams,
    shuffle: torch.Generator,
    grad_meter: GradNormMeter | None,
) -> float:
    """One pass over the shuffled training data; the running mean of its cross-entropy.

    Losses accumulate in a device tensor: the host syncs only every ``_FINITE_CHECK_EVERY``
    batches (divergence check) and once at the end. No accuracy here: the minibatches' hits
    are made with dropout on and weights that move during the epoch, so ``train_accuracy``
    comes from :func:`evaluate` on the fixed subset instead.
    """
    dev = t.x_train.device
    n = len(t.x_train)
    perm = torch.randperm(n, generator=shuffle).to(dev)
    hidden = model.hidden_linears()
    params = list(model.parameters())
    step = step_function(optimizer)
    loss_sum = torch.zeros((), device=dev)
    seen = 0
    autocast = training_autocast(dev, p)
    model.train()
    # Per batch only what the step needs: the gather, the forward and backward, the update.
    # Gradients are dropped by hand (``zero_grad(set_to_none=True)`` does the same behind a
    # profiler context) and the loss is summed without a no_grad block (``ce.detach()``
    # records nothing); these and the direct optimiser step keep the numbers bit for bit.
    for i, idx in enumerate(perm.split(p.batch_size)):
        nb = len(idx)
        if nb == 1 and p.norm == "batch":
            break  # batch norm cannot train on a single sample; skip the lone last one
        xb = t.x_train.index_select(0, idx)
        yb = t.y_train.index_select(0, idx)
        with autocast:
            loss, ce, _ = batch_loss(model, xb, yb, p.l1)
        for q in params:
            q.grad = None
        loss.backward()
        if grad_meter is not None:
            grad_meter.update()
        if p.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, p.clip_norm)
        step()
        if p.max_norm > 0:
            apply_max_norm(hidden, p.max_norm)
        loss_sum.add_(ce.detach(), alpha=nb)
        seen += nb
        if (i + 1) % _FINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(loss_sum)):
            break  # diverged: no point finishing the epoch
    return loss_sum.item() / seen


def training_autocast(
    dev: torch.device, p: MLPParams
) -> contextlib.AbstractContextManager[object]:
    """The context the training pass's forward and loss run in: autocast to bfloat16 for
    ``precision: bfloat16`` (matmuls in bfloat16, which CPUs with AMX and recent GPUs run
    several times faster than float32; softmax and the loss stay float32, and so do the
    weights, their gradients and the optimiser state), otherwise nothing. Entered once per
    batch: ``torch.autocast`` may be entered again after each exit."""
    if p.precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def train_eval_indices(n_train: int, seed: int) -> np.ndarray | None:
    """Sorted indices of the training subset ``train_accuracy`` is measured on.

    ``TRAIN_EVAL_SAMPLES`` of the ``n_train`` samples, drawn without replacement from a stream
    derived from the trial ``seed`` (it touches neither torch's global RNG, which dropout
    uses, nor the shuffle generator), so the same seed always picks the same samples. None
    when ``n_train`` is no larger: then every training sample is used.
    """
    if n_train <= TRAIN_EVAL_SAMPLES:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, _TRAIN_EVAL_STREAM]))
    # Sorted: the gather then reads the training array front to back.
    return np.sort(rng.choice(n_train, size=TRAIN_EVAL_SAMPLES, replace=False))


def train_eval_subset(t: Tensors, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training subset (features, labels) of :func:`train_eval_indices`.

    Gathered once per trial (a copy of at most ``TRAIN_EVAL_SAMPLES`` rows); the whole
    training split itself, without a copy, when it is that small.
    """
    picked = train_eval_indices(len(t.x_train), seed)
    if picked is None:
        return t.x_train, t.y_train
    idx = torch.from_numpy(picked).to(t.x_train.device)
    return t.x_train.index_select(0, idx), t.y_train.index_select(0, idx)


def evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``x``, ``y`` in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    hits = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        with torch.inference_mode():
            for start in range(0, len(x), EVAL_BATCH):
                logits = model(x[start : start + EVAL_BATCH])
                yb = y[start : start + EVAL_BATCH]
                loss_sum += F.cross_entropy(logits, yb, reduction="sum")
                hits += (logits.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(x), hits.item() / len(x)


def to_tensors(data: Dataset, dev: torch.device) -> Tensors:
    return Tensors(
        x_train=_tensor(data.x_train, np.float32, dev),
        y_train=_tensor(data.y_train, np.int64, dev),
        x_val=_tensor(data.x_val, np.float32, dev),
        y_val=_tensor(data.y_val, np.int64, dev),
    )


def _tensor(a: np.ndarray, dtype: type, dev: torch.device) -> torch.Tensor:
    """A tensor over ``a`` without a copy where possible.

    Arrays from Ray's object store are read-only; torch warns when it wraps one because
    writes through the tensor would fail. The training code only reads these tensors (batches
    are gathered copies), so sharing the buffer is safe and saves a copy per trial.
    """
    arr = np.ascontiguousarray(a, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(arr)
    return tensor.to(dev)
