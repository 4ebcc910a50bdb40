"""The fully-connected classifier trainer: ``trainer: trainers.mlp:trainer`` in a study file.

Params: all optional; :class:`trainers.mlp.params.MLPParams` holds each one's default, bounds
and meaning (the README's table lists them for users).

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

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from searchsvc.trainer import BaseTrainer, Dataset, EpochReport, FitOptions, ReportFn
from trainers.mlp.diagnostics import (
    GradNormMeter,
    activation_histogram_png,
    capture_activations,
    layer_stats,
)
from trainers.mlp.epoch import Tensors, evaluate, to_tensors, train_epoch, train_eval_subset
from trainers.mlp.layers import MLP, build_mlp
from trainers.mlp.optim import make_optimizer, make_scheduler
from trainers.mlp.params import MLPParams, parse_params
from trainers.mlp.rbm import rbm_generator, rbm_initialise
from trainers.mlp.state import (
    Progress,
    capture_rng,
    cpu_copy,
    restore_rng,
    restore_state,
    training_state,
)

__all__ = ["MLPTrainer", "trainer"]

log = logging.getLogger(__name__)

_DIAGNOSTIC_BATCH = 1000  # first N validation samples, fixed across epochs


# The metrics a study may optimise: reported every epoch, whatever the params.
_OBJECTIVE_METRICS = frozenset(
    {
        "train_loss", "train_accuracy", "train_eval_loss", "val_loss", "val_accuracy",
        "n_params", "epoch_time_s", "train_time_s",
    }
)  # fmt: skip


class MLPTrainer(BaseTrainer):
    """Trains a fully-connected classifier; see the module docstring for params and metrics."""

    name = "mlp"
    objective_metrics = _OBJECTIVE_METRICS
    supports_resume = True
    supports_refit = True

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming an unknown key or a bad value (used by validate)."""
        parse_params(params)

    def build_network(self, params: Mapping[str, Any], n_features: int, n_classes: int) -> MLP:
        """The untrained network ``fit`` trains for ``params`` (logits out)."""
        return build_mlp(parse_params(params), n_features, n_classes)

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        """Train with ``params`` on ``data`` for up to ``options.max_epochs``, reporting every
        epoch.

        Deterministic on CPU for the same params, data and seed; ``options.resume_from`` (an
        earlier report's ``training_state``) continues exactly where that epoch ended. A diverged
        epoch is reported (``diverged=True``) and ends the run; exceptions raised by
        ``report`` (the service's stop) propagate.
        """
        with _denormals_flushed():
            run = _setup(params, data, options)
            if run is None:
                return
            resume_from = options.resume_from
            first_epoch = int(resume_from["epoch"]) + 1 if resume_from is not None else 1
            for epoch in range(first_epoch, options.max_epochs + 1):
                epoch_report, finished = _epoch(run, epoch)
                log.debug("epoch %d: %s", epoch, epoch_report.metrics)
                report(epoch_report)
                if finished is not None:
                    log.info("%s", finished["reason"])
                    return


@contextlib.contextmanager
def _denormals_flushed() -> Iterator[None]:
    """Denormal floats flushed to zero inside, the setting put back as it was after.

    Adam's moment estimates for weights that never get a gradient (the constant-zero border
    pixels of MNIST) decay into the denormal range within a few epochs, and arithmetic on
    denormals is slow on x86: bench/precision_speed.py's 1024-1024 dropout network took 9.48 s
    a median epoch without the flush (its last 9.84 s), 7.17 s with it. Values below 1.2e-38
    become 0. It is a per-thread CPU setting: with ``cpus > 1`` torch's other intra-op threads
    keep computing denormals.
    """
    # torch has no getter for the setting: a flushed denormal doubles to 0.
    was_flushing = float((torch.tensor([1e-39]) * 2)[0]) == 0.0
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing and not was_flushing:
            torch.set_flush_denormal(False)


@dataclass
class _Run:
    """One trial's training objects, built once by :func:`_setup` and used by every epoch."""

    p: MLPParams
    dev: torch.device
    model: MLP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle: torch.Generator
    progress: Progress
    rng: Mapping[str, Any]
    tensors: Tensors
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    rbm_metrics: dict[str, float]
    n_params: int
    plain_params: dict[str, Any]
    max_epochs: int
    refit: bool = False  # the validation split is in the training data: nothing to stop on


def _setup(params: Mapping[str, Any], data: Dataset, options: FitOptions) -> _Run | None:
    """Build (or restore) the trial's network, optimiser and bookkeeping; None when the
    resumed state's epoch had already ended the run."""
    max_epochs, seed, resume_from = options.max_epochs, options.seed, options.resume_from
    p = parse_params(params)
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    if len(data.x_train) == 0 or len(data.x_val) == 0:
        raise ValueError(f"data set {data.name!r} has an empty train or validation split")
    dev = torch.device(options.device)
    torch.manual_seed(seed)
    model = build_mlp(p, data.n_features, data.n_classes).to(dev)
    optimizer = make_optimizer(model, p, dev)
    scheduler = make_scheduler(optimizer, p, max_epochs)
    shuffle = torch.Generator().manual_seed(seed)
    progress = Progress()
    if resume_from is not None:
        ended = restore_state(resume_from, model, optimizer, scheduler, shuffle, progress)
        if ended is not None:  # the saved epoch had ended the run: nothing left to do
            log.info("%s", ended["reason"])
            return None
        rng = resume_from["rng"]
    else:
        rng = capture_rng(shuffle, dev)
    tensors = to_tensors(data, dev)
    # Chosen once from the seed alone, so every epoch (and a resumed run) measures the
    # same samples and the curve moves only because the network does.
    x_fit, y_fit = train_eval_subset(tensors, seed)
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
    return _Run(
        p, dev, model, optimizer, scheduler, shuffle, progress, rng, tensors, x_fit, y_fit,
        rbm_metrics, n_params, plain_params, max_epochs, options.refit,
    )  # fmt: skip


def _epoch(run: _Run, epoch: int) -> tuple[EpochReport, dict[str, str] | None]:
    """Train and evaluate one epoch; its report, and why the run ends after it (or None)."""
    p, progress = run.p, run.progress
    t0 = time.perf_counter()
    # The global RNG (dropout) is restored each epoch, so whatever runs between epochs
    # (the report callback) cannot change the run, and a resumed run matches it.
    restore_rng(run.rng, run.shuffle, run.dev)
    lr = float(run.optimizer.param_groups[0]["lr"])
    grad_meter = GradNormMeter(run.model) if p.diagnostics else None  # None: no diagnostics
    train_loss = train_epoch(run.model, run.optimizer, run.tensors, p, run.shuffle, grad_meter)
    train_time = time.perf_counter() - t0
    val_loss, val_acc = evaluate(run.model, run.tensors.x_val, run.tensors.y_val)
    train_eval_loss, train_acc = evaluate(run.model, run.x_fit, run.y_fit)
    if run.scheduler is not None:
        run.scheduler.step()
    run.rng = capture_rng(run.shuffle, run.dev)

    diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
    improved = not diverged and val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss, progress.bad_epochs = val_loss, 0
    else:
        progress.bad_epochs += 1
    # A refit's validation split is part of its training data, and `keep_weights: last` asks
    # for the final epoch's weights: then every epoch's weights are reported (the service
    # keeps those of the epoch the trial ends at). A refit never stops early.
    keep = not diverged and (improved or run.refit or p.keep_weights == "last")
    best_state = None
    if keep:
        best_state = cpu_copy(run.model.state_dict())
        progress.best_epoch, progress.best_state = epoch, best_state
    early_stop = (
        p.patience > 0 and progress.bad_epochs >= p.patience and not diverged and not run.refit
    )
    final = diverged or early_stop or epoch == run.max_epochs

    metrics: dict[str, float] = {
        "train_loss": train_loss, "train_accuracy": train_acc,
        "train_eval_loss": train_eval_loss, "val_loss": val_loss, "val_accuracy": val_acc,
        "lr": lr, "n_params": float(run.n_params), "train_time_s": train_time,
        **run.rbm_metrics,
    }  # fmt: skip
    files: dict[str, bytes] = {}
    if grad_meter is not None:
        diag_x = run.tensors.x_val[:_DIAGNOSTIC_BATCH]
        draw = epoch == 1 or final
        files = _diagnose(run.model, diag_x, p, grad_meter, epoch, draw, metrics)

    finished: dict[str, str] | None = None
    if diverged:
        finished = {"status": "diverged", "reason": f"diverged at epoch {epoch}"}
    elif early_stop:
        reason = f"early stopping: val_loss did not improve for {p.patience} epochs"
        finished = {"status": "completed", "reason": reason}
    metrics["epoch_time_s"] = time.perf_counter() - t0
    state = training_state(
        epoch, run.plain_params, run.model, run.optimizer, run.scheduler, progress, run.rng,
        finished,
    )  # fmt: skip
    if run.rbm_metrics:
        state["rbm_metrics"] = run.rbm_metrics
    epoch_report = EpochReport(
        epoch, metrics, best_state, training_state=state, files=files, diverged=diverged
    )
    return epoch_report, finished


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


trainer = MLPTrainer()
