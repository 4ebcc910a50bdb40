"""Per-layer training diagnostics of the MLP: activation statistics, dead and saturated units,
gradient norms, activation histograms.

Activations are captured with forward hooks on one fixed validation batch, in eval mode, once
per epoch, so the training loop itself carries no hooks. Metric keys (``i`` is the 1-based
hidden layer):

- ``act_mean_i``, ``act_std_i``: mean and std of the layer's outputs over batch and units.
- ``saturated_i`` (sigmoid, tanh only): fraction of outputs in the flat tails (sigmoid < 0.02
  or > 0.98; tanh |y| > 0.98), over batch and units.
- ``dead_i`` (relu and maxout only): relu: fraction of units whose pre-activation is <= 0 for
  every sample of the batch: their output and gradient are zero, so nothing revives them;
  maxout: fraction of pieces that are never the max for any sample (they get no gradient).
  Not reported for leaky_relu, prelu and elu: their negative side still passes a gradient
  (slope, learned slope, exp), so a unit that is negative on every sample keeps learning and
  is not dead. A ``leaky_relu`` with ``leaky_slope: 0`` is a relu and is counted like one.
  Absent keys rather than zeros, as for ``saturated_i`` of the unbounded activations: a 0
  would read as "measured, none dead" in the report's per-layer table.
- ``grad_norm_i``: L2 norm of the layer's weight gradient (before clipping, L1 term
  included), averaged over the epoch's batches.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainers.mlp.layers import MLP, Maxout

__all__ = [
    "DIAGNOSTIC_PREFIXES",
    "GradNormMeter",
    "activation_histogram_png",
    "capture_activations",
    "layer_stats",
]

DIAGNOSTIC_PREFIXES = ("act_mean", "act_std", "saturated", "dead", "grad_norm")
_SIGMOID_LOW, _SIGMOID_HIGH, _TANH_ABS = 0.02, 0.98, 0.98


def capture_activations(model: MLP, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pre-activation, output) of each hidden layer's activation on batch ``x``.

    Runs the model in eval mode (dropout off, batch-norm running stats) without gradients and
    restores its training mode afterwards.
    """
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(
        _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor
    ) -> None:
        captured.append((inputs[0].detach(), out.detach()))

    handles = [block.act.register_forward_hook(hook) for block in model.blocks]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return captured


def layer_stats(
    captured: Sequence[tuple[torch.Tensor, torch.Tensor]], activation: str, model: MLP
) -> dict[str, float]:
    """The per-layer activation metrics (see the module docstring) from ``captured``."""
    metrics: dict[str, float] = {}
    for i, ((pre, out), block) in enumerate(zip(captured, model.blocks, strict=True), start=1):
        metrics[f"act_mean_{i}"] = float(out.mean())
        metrics[f"act_std_{i}"] = float(out.std()) if out.numel() > 1 else 0.0
        if activation == "sigmoid":
            tails = (out < _SIGMOID_LOW) | (out > _SIGMOID_HIGH)
            metrics[f"saturated_{i}"] = float(tails.float().mean())
        elif activation == "tanh":
            metrics[f"saturated_{i}"] = float((out.abs() > _TANH_ABS).float().mean())
        elif _can_die(block.act):
            metrics[f"dead_{i}"] = float((pre <= 0).all(dim=0).float().mean())
        elif isinstance(block.act, Maxout):
            metrics[f"dead_{i}"] = _dead_pieces(pre, block.act.pieces)
    return metrics


def _can_die(act: nn.Module) -> bool:
    """Whether a unit with ``act`` gets a zero gradient for every negative input (a relu).

    Decided on the module, not the activation's name, so that a leaky_relu with slope 0
    (which computes a relu) counts and the other leaky variants do not.
    """
    if isinstance(act, nn.ReLU):
        return True
    return isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.0


def _dead_pieces(pre: torch.Tensor, pieces: int) -> float:
    """Fraction of maxout pieces never selected as the max on the batch."""
    n_units = pre.shape[1] // pieces
    winner = pre.unflatten(-1, (n_units, pieces)).argmax(dim=-1)  # (n, n_units)
    flat = winner + torch.arange(n_units, device=pre.device) * pieces
    selected = torch.zeros(n_units * pieces, dtype=torch.bool, device=pre.device)
    selected[flat.flatten()] = True
    return 1.0 - float(selected.float().mean())


class GradNormMeter:
    """Accumulates each hidden layer's weight-gradient norm over an epoch, on the device.

    ``update`` adds one small stacked tensor per batch (no host sync); ``means`` syncs once.
    """

    def __init__(self, model: MLP) -> None:
        self._weights = [layer.weight for layer in model.hidden_linears()]
        self._sum: torch.Tensor | None = None
        self._count = 0

    def update(self) -> None:
        if not self._weights:
            return
        norms = torch.stack(
            [
                torch.linalg.vector_norm(w.grad) if w.grad is not None else w.new_zeros(())
                for w in self._weights
            ]
        )
        self._sum = norms if self._sum is None else self._sum.add_(norms)
        self._count += 1

    def means(self) -> dict[str, float]:
        """``grad_norm_i`` averaged over the batches seen since the last call; then resets."""
        if self._sum is None or self._count == 0:
            return {}
        values = (self._sum / self._count).tolist()
        self._sum, self._count = None, 0
        return {f"grad_norm_{i}": float(v) for i, v in enumerate(values, start=1)}


_RANGES: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def activation_histogram_png(
    outputs: Sequence[torch.Tensor], activation: str, epoch: int
) -> bytes | None:
    """A PNG with one histogram of activation values per hidden layer; None if nothing to draw.

    Non-finite values (a diverged network) are left out; a layer with none finite is drawn empty.
    """
    if not outputs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(outputs)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    # A fixed layout and one filled step patch per panel (not 50 bars) keep this ~0.1 s.
    width, height = max(5.0, 3.2 * ncols), 2.5 * nrows + 0.5
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(  # margins in inches, whatever the grid
        left=0.8 / width,
        right=1 - 0.2 / width,
        bottom=0.55 / height,
        top=1 - 0.8 / height,
        wspace=0.45,
        hspace=0.75,
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, out in enumerate(outputs):
        ax = axes[i // ncols][i % ncols]
        values = out.detach().float().cpu().numpy().ravel()
        values = values[np.isfinite(values)]
        # Bounded activations get their whole range, so a collapse (std 0.01: all near 0.5)
        # or saturation (std 1: piled at 0 and 1) shows at a glance, as in the material.
        span = _RANGES.get(activation)
        if values.size:
            counts, edges = np.histogram(values, bins=50, range=span)
            ax.stairs(counts, edges, fill=True, color="tab:blue")
        if span is not None:
            ax.set_xlim(*span)
        ax.set_title(f"hidden layer {i + 1}")
        ax.set_xlabel("activation value")
        ax.set_ylabel("count")
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"Hidden-layer activations ({activation}), epoch {epoch}, validation batch")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
