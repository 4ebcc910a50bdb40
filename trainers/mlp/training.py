"""The fully-connected classifier trainer: ``trainer: trainers.mlp:trainer`` in a study file.

Params (all optional; see :mod:`trainers.mlp.params` for the checks):

==================  =========================  ===============================================
key                 default                    meaning
==================  =========================  ===============================================
n_layers            2                          hidden layers (0: softmax regression)
width_1..width_N    ``width``                  units of hidden layer i
width               256                        units of every layer without its own width_i
activation          relu                       sigmoid, tanh, relu, leaky_relu, prelu, elu,
                                               maxout
leaky_slope         0.01                       negative slope of leaky_relu
maxout_pieces       2                          linear pieces per maxout unit
init                he_normal (ReLU family,    zeros, normal, xavier_uniform, xavier_normal,
                    maxout), xavier_uniform    he_uniform, he_normal, orthogonal, rbm; biases
                    (sigmoid, tanh)            are zero; the output layer uses the same scheme
                                               (gain 1 for he_*; xavier_uniform for rbm)
init_std            0.01                       std of ``normal``
rbm_epochs          3                          ``rbm``: CD epochs per layer
rbm_lr              0.05                       ``rbm``: CD learning rate
rbm_k               1                          ``rbm``: Gibbs steps of CD-k
rbm_samples         10000                      ``rbm``: training samples it pre-trains on
dropout             0                          inverted dropout after each hidden activation
input_dropout       0                          inverted dropout on the inputs
norm                none                       batch, layer: after the linear, before the
                                               activation
optimizer           adam                       sgd, momentum, nesterov, adagrad, rmsprop,
                                               adam, adamw
lr                  1e-3                       learning rate
momentum            0.9 (momentum, nesterov)   momentum; rmsprop uses it only when given
weight_decay        0                          L2 via the optimiser (linear weights only)
l1                  0                          loss += l1 * sum |w| (linear weights only)
clip_norm           0 (off)                    global gradient-norm clipping
max_norm            0 (off)                    max L2 norm of each hidden unit's incoming
                                               weights, enforced after every step
lr_schedule         none                       cosine (to 0 over max_epochs), step
lr_step_size        10                         epochs between step decays
lr_gamma            0.1                        step decay factor
batch_size          128                        minibatch size
patience            5                          early stopping on val_loss (0: off)
diagnostics         true                       per-layer metrics and activation histograms
==================  =========================  ===============================================

Reported each epoch:

- ``train_loss``: the conventional training curve: the running mean, over the epoch's
  minibatches, of the cross-entropy the optimiser minimised, in training mode (dropout on,
  batch-norm batch statistics) while the weights moved during the epoch. Without the L1 term
  (weight decay lives in the optimiser, never in a loss). With dropout it sits well above
  what the finished network does on the same data.
- ``train_accuracy`` and ``train_eval_loss``: accuracy and mean cross-entropy (plain NLL,
  no L1 or weight decay) of the network as it stands at the end of the epoch, in eval mode
  (dropout off, batch-norm running statistics), on a fixed training subset of
  min(n_train, 10,000) samples drawn once per trial from its seed (all of them when fewer).
  It is the network the validation metrics measure, so ``train_accuracy - val_accuracy`` is
  the generalisation gap, and the recipe diagnosis's underfit rule sees what the network
  fits rather than a dropout-handicapped running average. One batched forward pass without
  gradients: about a third of the cost of a training pass over as many samples.
- ``val_loss``, ``val_accuracy``: the same, on the whole validation split.
- ``lr`` (used this epoch), ``n_params``, ``epoch_time_s`` (the whole epoch, evaluations
  included), ``train_time_s`` (the training pass only) and the diagnostics of
  :mod:`trainers.mlp.diagnostics`. The objective metrics (what a study may optimise) are the
  losses, accuracies, ``n_params`` and the two timings.

A non-finite training or validation loss ends the trial: that epoch's report has
``diverged=True`` and is the last.

``init: rbm`` pre-trains each hidden layer as a restricted Boltzmann machine (CD-k, greedy
layer-wise, :mod:`trainers.mlp.rbm`) before the first epoch; it needs features in [0, 1]. Its
hidden units are sigmoid units, so ``sigmoid`` is the faithful pairing; with ``tanh`` or the
ReLU family the weights are only a starting point; maxout is rejected. Every epoch then also
reports ``rbm_pretrain_time_s`` (the whole pre-training, wall clock, not part of
``epoch_time_s``) and ``rbm_recon_error_1..N`` (each layer's final reconstruction error).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from searchsvc.trainer import BaseTrainer, Dataset, EpochReport, ReportFn
from trainers.mlp.diagnostics import (
    GradNormMeter,
    activation_histogram_png,
    capture_activations,
    layer_stats,
)
from trainers.mlp.layers import MLP, build_mlp
from trainers.mlp.optim import apply_max_norm, l1_penalty, make_optimizer, make_scheduler
from trainers.mlp.params import MLPParams, parse_params
from trainers.mlp.rbm import rbm_generator, rbm_initialise

__all__ = ["MLPTrainer", "TRAIN_EVAL_SAMPLES", "batch_loss", "train_eval_indices", "trainer"]

log = logging.getLogger(__name__)

_DIAGNOSTIC_BATCH = 1000  # first N validation samples, fixed across epochs
_EVAL_BATCH = 8192
_FINITE_CHECK_EVERY = 50  # batches between divergence checks (each one is a host sync)
_STATE_FORMAT = "searchsvc.trainers.mlp/1"

TRAIN_EVAL_SAMPLES = 10_000  # size of the fixed training subset train_accuracy is measured on
_TRAIN_EVAL_STREAM = 0x545241494E  # "TRAIN": keeps the subset's draw apart from other streams

# The metrics a study may optimise: reported every epoch, whatever the params.
_OBJECTIVE_METRICS = frozenset(
    {
        "train_loss", "train_accuracy", "train_eval_loss", "val_loss", "val_accuracy",
        "n_params", "epoch_time_s", "train_time_s",
    }
)  # fmt: skip


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


@dataclass
class _Progress:
    """Early-stopping bookkeeping, carried in ``training_state``."""

    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0


@dataclass(frozen=True)
class _Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class MLPTrainer(BaseTrainer):
    """Trains a fully-connected classifier; see the module docstring for params and metrics."""

    name = "mlp"
    objective_metrics = _OBJECTIVE_METRICS
    supports_resume = True

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming an unknown key or a bad value (used by validate)."""
        parse_params(params)

    def build_network(self, params: Mapping[str, Any], n_features: int, n_classes: int) -> MLP:
        """The untrained network ``fit`` trains for ``params`` (logits out)."""
        return build_mlp(parse_params(params), n_features, n_classes)

    def fit(
        self,
        params: Mapping[str, Any],
        data: Dataset,
        report: ReportFn,
        *,
        max_epochs: int,
        seed: int,
        device: str = "cpu",
        resume_from: Mapping[str, Any] | None = None,
    ) -> None:
        """Train with ``params`` on ``data`` for up to ``max_epochs``, reporting every epoch.

        Deterministic on CPU for the same params, data and seed; ``resume_from`` (an earlier
        report's ``training_state``) continues exactly where that epoch ended. A diverged
        epoch is reported (``diverged=True``) and ends the run; exceptions raised by
        ``report`` (the service's stop) propagate.
        """
        p = parse_params(params)
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        if len(data.x_train) == 0 or len(data.x_val) == 0:
            raise ValueError(f"data set {data.name!r} has an empty train or validation split")
        dev = torch.device(device)
        torch.manual_seed(seed)
        model = build_mlp(p, data.n_features, data.n_classes).to(dev)
        optimizer = make_optimizer(model, p, dev)
        scheduler = make_scheduler(optimizer, p, max_epochs)
        shuffle = torch.Generator().manual_seed(seed)
        progress = _Progress()
        first_epoch = 1
        if resume_from is not None:
            ended = _restore(resume_from, model, optimizer, scheduler, shuffle, progress)
            first_epoch = int(resume_from["epoch"]) + 1
            if ended is not None:  # the saved epoch had ended the run: nothing left to do
                log.info("%s", ended["reason"])
                return
            rng = resume_from["rng"]
        else:
            rng = _capture_rng(shuffle, dev)
        tensors = _to_tensors(data, dev)
        # Chosen once from the seed alone, so every epoch (and a resumed run) measures the
        # same samples and the curve moves only because the network does.
        x_fit, y_fit = _train_eval_subset(tensors, seed)
        # Reported with every epoch; a resumed run takes them from the state, whose weights
        # already hold the pre-training (so it is not repeated).
        rbm_metrics: dict[str, float] = {}
        if p.init == "rbm" and resume_from is not None:
            rbm_metrics = dict(resume_from.get("rbm_metrics") or {})
        elif p.init == "rbm":
            pretraining = rbm_initialise(model, tensors.x_train, p, rbm_generator(seed, dev))
            rbm_metrics = pretraining.metrics()
        n_params = sum(q.numel() for q in model.parameters() if q.requires_grad)
        # Plain Python values (not numpy scalars), so the state loads with weights_only=True.
        plain_params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

        for epoch in range(first_epoch, max_epochs + 1):
            t0 = time.perf_counter()
            # The global RNG (dropout) is restored each epoch, so whatever runs between epochs
            # (the report callback) cannot change the run, and a resumed run matches it.
            _restore_rng(rng, shuffle, dev)
            lr = float(optimizer.param_groups[0]["lr"])
            grad_meter = GradNormMeter(model) if p.diagnostics else None  # None: no diagnostics
            train_loss = _train_epoch(model, optimizer, tensors, p, shuffle, grad_meter)
            train_time = time.perf_counter() - t0
            val_loss, val_acc = evaluate(model, tensors.x_val, tensors.y_val)
            train_eval_loss, train_acc = evaluate(model, x_fit, y_fit)
            if scheduler is not None:
                scheduler.step()
            rng = _capture_rng(shuffle, dev)

            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            improved = not diverged and val_loss < progress.best_val_loss
            best_state = None
            if improved:
                best_state = _cpu_copy(model.state_dict())
                progress.best_val_loss, progress.best_epoch = val_loss, epoch
                progress.best_state, progress.bad_epochs = best_state, 0
            else:
                progress.bad_epochs += 1
            early_stop = p.patience > 0 and progress.bad_epochs >= p.patience and not diverged
            final = diverged or early_stop or epoch == max_epochs

            metrics: dict[str, float] = {
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "train_eval_loss": train_eval_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": lr,
                "n_params": float(n_params),
                "train_time_s": train_time,
                **rbm_metrics,
            }
            files: dict[str, bytes] = {}
            if grad_meter is not None:
                diag_x = tensors.x_val[:_DIAGNOSTIC_BATCH]
                draw = epoch == 1 or final
                files = _diagnose(model, diag_x, p, grad_meter, epoch, draw, metrics)

            finished: dict[str, str] | None = None
            if diverged:
                finished = {"status": "diverged", "reason": f"diverged at epoch {epoch}"}
            elif early_stop:
                reason = f"early stopping: val_loss did not improve for {p.patience} epochs"
                finished = {"status": "completed", "reason": reason}
            metrics["epoch_time_s"] = time.perf_counter() - t0
            state = _training_state(
                epoch, plain_params, model, optimizer, scheduler, progress, rng, finished
            )
            if rbm_metrics:
                state["rbm_metrics"] = rbm_metrics
            log.debug("epoch %d: %s", epoch, metrics)
            report(
                EpochReport(
                    epoch, metrics, best_state, training_state=state, files=files,
                    diverged=diverged,
                )
            )  # fmt: skip
            if finished is not None:
                log.info("%s", finished["reason"])
                return


def _diagnose(
    model: MLP,
    x: torch.Tensor,
    p: MLPParams,
    grad_meter: GradNormMeter,
    epoch: int,
    draw: bool,
    metrics: dict[str, float],
) -> dict[str, bytes]:
    """Add the per-layer diagnostics to ``metrics``; the histogram PNG if ``draw``."""
    metrics.update(grad_meter.means())
    captured = capture_activations(model, x)
    metrics.update(layer_stats(captured, p.activation, model))
    if not draw:
        return {}
    png = activation_histogram_png([out for _, out in captured], p.activation, epoch)
    return {} if png is None else {f"activations_epoch_{epoch:03d}.png": png}


def _training_state(
    epoch: int,
    params: Mapping[str, Any],
    model: MLP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    progress: _Progress,
    rng: Mapping[str, Any],
    finished: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Everything ``fit(resume_from=...)`` needs, as CPU copies that training won't touch."""
    return {
        "format": _STATE_FORMAT,
        "epoch": epoch,
        "params": dict(params),
        "model": _cpu_copy(model.state_dict()),
        "optimizer": _cpu_copy(optimizer.state_dict()),
        "scheduler": None if scheduler is None else copy.deepcopy(scheduler.state_dict()),
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "best_state": progress.best_state,  # a snapshot, never modified once taken
        "bad_epochs": progress.bad_epochs,
        "rng": rng,
        "finished": finished,  # set on the epoch that ended the run: a resume just returns
    }


def _train_epoch(
    model: MLP,
    optimizer: torch.optim.Optimizer,
    t: _Tensors,
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
    loss_sum = torch.zeros((), device=dev)
    seen = 0
    bs = p.batch_size
    model.train()
    for step, start in enumerate(range(0, n, bs)):
        idx = perm[start : start + bs]
        nb = len(idx)
        if nb == 1 and p.norm == "batch":
            break  # batch norm cannot train on a single sample; skip the lone last one
        xb = t.x_train.index_select(0, idx)
        yb = t.y_train.index_select(0, idx)
        loss, ce, _ = batch_loss(model, xb, yb, p.l1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_meter is not None:
            grad_meter.update()
        if p.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, p.clip_norm)
        optimizer.step()
        if p.max_norm > 0:
            apply_max_norm(hidden, p.max_norm)
        with torch.no_grad():
            loss_sum.add_(ce.detach(), alpha=nb)
        seen += nb
        if (step + 1) % _FINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(loss_sum)):
            break  # diverged: no point finishing the epoch
    return loss_sum.item() / seen


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


def _train_eval_subset(t: _Tensors, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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
            for start in range(0, len(x), _EVAL_BATCH):
                logits = model(x[start : start + _EVAL_BATCH])
                yb = y[start : start + _EVAL_BATCH]
                loss_sum += F.cross_entropy(logits, yb, reduction="sum")
                hits += (logits.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(x), hits.item() / len(x)


def _to_tensors(data: Dataset, dev: torch.device) -> _Tensors:
    return _Tensors(
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


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists of tensors, every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _capture_rng(shuffle: torch.Generator, dev: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def _restore_rng(state: Mapping[str, Any], shuffle: torch.Generator, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if dev.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], dev)


def _restore(
    state: Mapping[str, Any],
    model: MLP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    shuffle: torch.Generator,
    progress: _Progress,
) -> Mapping[str, str] | None:
    """Load a ``training_state``; returns its ``finished`` entry (None if training goes on)."""
    if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
        raise ValueError(f"resume_from is not an MLP training_state ({_STATE_FORMAT})")
    model.load_state_dict(state["model"])
    # A copy: the optimiser may adopt the given tensors and update them in place, which
    # would alter the caller's training_state.
    optimizer.load_state_dict(_cpu_copy(state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    shuffle.set_state(state["rng"]["shuffle"])
    progress.best_val_loss = float(state["best_val_loss"])
    progress.best_epoch = int(state["best_epoch"])
    progress.best_state = state["best_state"]
    progress.bad_epochs = int(state["bad_epochs"])
    return state.get("finished")


trainer = MLPTrainer()
