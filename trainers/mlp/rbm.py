"""Greedy layer-wise RBM pre-training: the ``rbm`` choice of the MLP's ``init`` param.

Before supervised training each hidden layer is trained as a restricted Boltzmann machine
(Hinton, Osindero & Teh, 2006; Hinton, "A practical guide to training RBMs", 2010): layer 1
on the input features, layer i+1 on the hidden *probabilities* of layer i (a mean-field
pass, not samples). Each RBM's weights ``W`` (hidden x visible, the ``nn.Linear`` layout)
and hidden biases then initialise that hidden layer; the visible biases are discarded, and
the output layer keeps its ordinary (Xavier) init.

Both layers of every RBM are Bernoulli units, so the inputs must lie in [0, 1]: grey levels
are read as probabilities of a pixel being on, as in the original MNIST experiments.

Which activations it pairs with: an RBM's hidden units are sigmoid units, so ``sigmoid`` is
the faithful (classic deep-belief-net) pairing: the pre-trained layer computes exactly the
RBM's hidden probabilities. ``tanh`` and the ReLU family are accepted, but there the
weights are only a starting point, since the layer no longer computes what the RBM learned.
Maxout is rejected: its layers have ``width * pieces`` outputs, which no RBM provides.

The cost is the point of recording it: ``rbm_pretrain_time_s`` is measured apart from the
supervised epochs. Training is batched and uses a subset (``rbm_samples``) of the training
data; every random draw comes from the given ``torch.Generator``, so it is reproducible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from trainers.mlp.layers import MLP
from trainers.mlp.params import MLPParams

__all__ = [
    "BernoulliRBM",
    "RBMLayer",
    "RBMPretraining",
    "RBM_BATCH_SIZE",
    "RBM_MOMENTUM",
    "pretrain_stack",
    "rbm_generator",
    "rbm_initialise",
]

log = logging.getLogger(__name__)

RBM_BATCH_SIZE = 100  # the practical guide's 10-100; fixed so the supervised batch_size
# (which a study may search up to thousands) does not starve the RBMs of updates
RBM_MOMENTUM = 0.5  # the guide's value for the first epochs; a few epochs is all we run
_INIT_STD = 0.01  # W ~ N(0, 0.01^2), as the guide recommends
_EVAL_CHUNK = 8192  # rows per chunk when measuring the reconstruction error
_BIAS_EPS = 1e-3  # clamps the visible means before the logit (a pixel that is never on)
_SEED_STREAM = 0x52424D  # "RBM": keeps the pre-training draws apart from the shuffle stream


class BernoulliRBM:
    """A Bernoulli-Bernoulli restricted Boltzmann machine.

    Attributes:
        weight: ``(n_hidden, n_visible)``, the layout of ``nn.Linear.weight``.
        visible_bias: ``(n_visible,)``.
        hidden_bias: ``(n_hidden,)``.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> None:
        """Small random weights N(0, 0.01^2) and zero biases, drawn from ``generator``."""
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"an RBM needs >= 1 unit per layer, got {n_visible}x{n_hidden}")
        dev = torch.device(device) if device is not None else generator.device
        self.weight = torch.randn(n_hidden, n_visible, generator=generator, device=dev)
        self.weight.mul_(_INIT_STD)
        self.visible_bias = torch.zeros(n_visible, device=dev)
        self.hidden_bias = torch.zeros(n_hidden, device=dev)
        self._velocity: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_visible(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_hidden(self) -> int:
        return int(self.weight.shape[0])

    @torch.no_grad()
    def init_visible_bias(self, v: torch.Tensor) -> None:
        """Set the visible biases to log(p / (1 - p)) of the data's means (the guide's advice).

        Without it the first updates are spent learning the pixel marginals through ``W``.
        """
        p = v.mean(dim=0).clamp(_BIAS_EPS, 1.0 - _BIAS_EPS)
        self.visible_bias = torch.log(p / (1.0 - p))

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v): ``(n, n_visible) -> (n, n_hidden)``."""
        return torch.sigmoid(torch.addmm(self.hidden_bias, v, self.weight.T))

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h): ``(n, n_hidden) -> (n, n_visible)``."""
        return torch.sigmoid(torch.addmm(self.visible_bias, h, self.weight))

    @torch.no_grad()
    def cd_step(
        self,
        v0: torch.Tensor,
        k: int = 1,
        lr: float = 0.05,
        generator: torch.Generator | None = None,
        *,
        momentum: float = 0.0,
    ) -> torch.Tensor:
        """One contrastive-divergence (CD-k) update on the minibatch ``v0``.

        The chain samples binary hidden states each time the hidden layer is driven
        (``h ~ p(h | v)``) and, between its steps, binary visible states; its last visible
        state is the probabilities ``p(v | h)``, and both ends use hidden *probabilities* in
        the statistics, which lowers their variance (the usual recipe). The update is
        ``lr * (<v h>_data - <v h>_k)`` averaged over the batch, with ``momentum`` (0: plain).

        Args:
            v0: ``(batch, n_visible)`` data in [0, 1].
            k: Gibbs steps (>= 1).
            lr: learning rate.
            generator: the source of the samples (on the RBM's device).
            momentum: velocity decay; 0 turns momentum off.

        Returns:
            The batch's squared reconstruction error (mean over its elements) between ``v0``
            and the chain's last visible probabilities, as a 0-d tensor (no host sync).
        """
        if k < 1:
            raise ValueError(f"rbm_k: must be >= 1, got {k}")
        h0 = self.hidden_probs(v0)
        h = torch.bernoulli(h0, generator=generator)
        for step in range(k):
            vk = self.visible_probs(h)
            if step == k - 1:
                hk = self.hidden_probs(vk)  # the chain's end: probabilities on both layers
            else:
                v_sampled = torch.bernoulli(vk, generator=generator)
                h = torch.bernoulli(self.hidden_probs(v_sampled), generator=generator)
        n = v0.shape[0]
        grad_w = (h0.T @ v0 - hk.T @ vk) / n
        grad_v = (v0 - vk).mean(dim=0)
        grad_h = (h0 - hk).mean(dim=0)
        if self._velocity is None:
            self._velocity = (grad_w.mul(lr), grad_v.mul(lr), grad_h.mul(lr))
        else:
            for vel, grad in zip(self._velocity, (grad_w, grad_v, grad_h), strict=True):
                vel.mul_(momentum).add_(grad, alpha=lr)
        vel_w, vel_v, vel_h = self._velocity
        self.weight.add_(vel_w)
        self.visible_bias.add_(vel_v)
        self.hidden_bias.add_(vel_h)
        return (v0 - vk).pow(2).mean()

    @torch.no_grad()
    def reconstruction_error(self, v: torch.Tensor) -> float:
        """Mean squared error between ``v`` and its one-step mean-field reconstruction.

        The reconstruction is ``p(v | p(h | v))`` (probabilities throughout, no sampling), so
        the measure is deterministic; the mean is over every element of ``v``.
        """
        total = torch.zeros((), dtype=torch.float64, device=v.device)
        for start in range(0, len(v), _EVAL_CHUNK):
            chunk = v[start : start + _EVAL_CHUNK]
            recon = self.visible_probs(self.hidden_probs(chunk))
            total += (chunk - recon).pow(2).sum(dtype=torch.float64)
        return float(total) / v.numel()


class RBMLayer(NamedTuple):
    """One pre-trained layer: what initialises a hidden ``nn.Linear``."""

    weight: torch.Tensor  # (n_hidden, n_visible) = (out_features, in_features)
    hidden_bias: torch.Tensor  # (n_hidden,)
    recon_errors: tuple[float, ...]  # reconstruction error after each epoch


def pretrain_stack(
    x_train: torch.Tensor | np.ndarray,
    widths: Sequence[int],
    *,
    epochs: int,
    lr: float,
    k: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    momentum: float = RBM_MOMENTUM,
) -> list[RBMLayer]:
    """Greedy layer-wise training of a stack of RBMs with CD-k.

    Layer 1 trains on ``x_train``, layer i+1 on the hidden probabilities of layer i over the
    same samples. Each epoch visits the samples in a fresh random order.

    Args:
        x_train: ``(n, n_features)`` data in [0, 1].
        widths: hidden units of each layer, layer 1 first.
        epochs: passes over the data per layer (>= 1).
        lr: CD learning rate.
        k: Gibbs steps of CD-k.
        batch_size: minibatch size.
        generator: every random draw (init, order, samples); must live on ``device``.
        device: where to train; the generator's device when None.
        momentum: momentum of the CD updates (0: off).

    Returns:
        One :class:`RBMLayer` per width: (W, hidden bias, reconstruction error per epoch).

    Raises:
        ValueError: inputs outside [0, 1], an empty data set or a non-positive setting.
    """
    if epochs < 1 or k < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"pretrain_stack needs epochs, k, batch_size >= 1 and lr > 0; got epochs={epochs}, "
            f"k={k}, batch_size={batch_size}, lr={lr}"
        )
    dev = torch.device(device) if device is not None else generator.device
    v = torch.as_tensor(x_train, dtype=torch.float32).to(dev)
    if v.ndim != 2 or len(v) == 0:
        raise ValueError(f"pretrain_stack needs a non-empty (n, features) array, got {v.shape}")
    _check_unit_interval(v)
    n = len(v)
    layers: list[RBMLayer] = []
    for i, width in enumerate(widths, start=1):
        rbm = BernoulliRBM(v.shape[1], width, generator=generator, device=dev)
        rbm.init_visible_bias(v)
        errors = []
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator, device=generator.device).to(dev)
            for start in range(0, n, batch_size):
                batch = v.index_select(0, order[start : start + batch_size])
                rbm.cd_step(batch, k, lr, generator, momentum=momentum)
            errors.append(rbm.reconstruction_error(v))  # one host sync per epoch
        log.debug("RBM layer %d (%d -> %d): recon errors %s", i, v.shape[1], width, errors)
        layers.append(RBMLayer(rbm.weight.clone(), rbm.hidden_bias.clone(), tuple(errors)))
        with torch.no_grad():
            v = rbm.hidden_probs(v)  # mean-field: the next RBM sees probabilities
    return layers


@dataclass(frozen=True)
class RBMPretraining:
    """The outcome of :func:`rbm_initialise`: the layers and what it cost."""

    time_s: float
    layers: tuple[RBMLayer, ...]

    def metrics(self) -> dict[str, float]:
        """``rbm_pretrain_time_s`` and ``rbm_recon_error_{i}`` (layer i's final error)."""
        out = {"rbm_pretrain_time_s": self.time_s}
        for i, layer in enumerate(self.layers, start=1):
            out[f"rbm_recon_error_{i}"] = layer.recon_errors[-1]
        return out


def rbm_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The pre-training's own generator for a trial ``seed``, on ``device``.

    Derived from the seed through a ``SeedSequence`` so that it neither shares a stream
    with the trainer's shuffle generator (seeded with ``seed`` itself) nor touches torch's
    global RNG, which the supervised epochs (dropout) rely on.
    """
    state = np.random.SeedSequence([seed % 2**64, _SEED_STREAM]).generate_state(1, np.uint64)
    return torch.Generator(device=torch.device(device)).manual_seed(int(state[0]) >> 1)


def rbm_initialise(
    model: MLP,
    x_train: torch.Tensor | np.ndarray,
    p: MLPParams,
    generator: torch.Generator,
) -> RBMPretraining:
    """Pre-train ``model``'s hidden layers as RBMs and copy the results into them, in place.

    Uses a random subset of ``p.rbm_samples`` rows of ``x_train`` (all of them if fewer),
    ``p.rbm_epochs`` epochs of CD-``p.rbm_k`` at ``p.rbm_lr``. Each hidden ``nn.Linear``
    receives its RBM's ``W`` and hidden bias; the output layer is left as built.

    Args:
        model: the network from :func:`trainers.mlp.layers.build_mlp`.
        x_train: the training features, in [0, 1].
        p: the parsed params (``init`` is ``rbm``).
        generator: the source of every random draw, on the model's device.

    Returns:
        The layers, their reconstruction errors and the wall-clock time of the whole thing.

    Raises:
        ValueError: features outside [0, 1], or a network whose layers do not fit the RBMs.
    """
    start = time.perf_counter()
    linears = model.hidden_linears()
    if p.activation == "maxout" or any(
        lin.out_features != w for lin, w in zip(linears, p.widths, strict=True)
    ):
        raise ValueError(
            "init rbm pairs with sigmoid (classic), tanh or the ReLU family, not maxout"
        )
    dev = linears[0].weight.device if linears else model.output.weight.device
    x = torch.as_tensor(x_train, dtype=torch.float32).to(dev)
    _check_unit_interval(x)
    if len(x) > p.rbm_samples:
        pick = torch.randperm(len(x), generator=generator, device=generator.device)
        x = x.index_select(0, pick[: p.rbm_samples].to(dev))
    layers = pretrain_stack(
        x,
        p.widths,
        epochs=p.rbm_epochs,
        lr=p.rbm_lr,
        k=p.rbm_k,
        batch_size=RBM_BATCH_SIZE,
        generator=generator,
        device=dev,
    )
    with torch.no_grad():
        for linear, layer in zip(linears, layers, strict=True):
            linear.weight.copy_(layer.weight)
            linear.bias.copy_(layer.hidden_bias)
    result = RBMPretraining(time.perf_counter() - start, tuple(layers))
    log.info(
        "RBM pre-training of %d layers on %d samples took %.2f s; final recon errors %s",
        len(layers),
        len(x),
        result.time_s,
        [round(layer.recon_errors[-1], 5) for layer in layers],
    )
    return result


def _check_unit_interval(x: torch.Tensor) -> None:
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(
            "init rbm needs input features in [0, 1] (its visible units are Bernoulli); "
            f"these range over [{lo:.4g}, {hi:.4g}]. Scale them (e.g. pixels / 255) or pick "
            "another init"
        )
