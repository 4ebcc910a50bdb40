"""Optimisers, learning-rate schedules and the weight constraints/penalties of the MLP.

Weight decay (L2, through the optimiser's ``weight_decay``) and the L1 penalty apply to the
linear layers' weights only: biases, normalisation parameters and PReLU slopes are not
shrunk, as is usual practice.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainers.mlp.layers import MLP
from trainers.mlp.params import MLPParams

__all__ = ["apply_max_norm", "l1_penalty", "make_optimizer", "make_scheduler"]

_DEFAULT_MOMENTUM = 0.9


def make_optimizer(model: MLP, p: MLPParams, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser named by ``p.optimizer`` over ``model``'s parameters.

    ``sgd`` is plain SGD; ``momentum``/``nesterov`` use ``p.momentum`` (default 0.9);
    ``rmsprop`` uses ``p.momentum`` only when given (default plain RMSprop).
    """
    weights = [layer.weight for layer in model.linears()]
    weight_ids = {id(w) for w in weights}
    others = [q for q in model.parameters() if id(q) not in weight_ids]
    groups: list[dict[str, Any]] = [{"params": weights, "weight_decay": p.weight_decay}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    name, lr = p.optimizer, p.lr
    # The fused kernels update every parameter in one pass: on CPU they cut the optimiser's
    # share of a small network's step several-fold. Same results on every run.
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **fused)
    if name in ("momentum", "nesterov"):
        momentum = _DEFAULT_MOMENTUM if p.momentum is None else p.momentum
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=name == "nesterov", **fused
        )
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, **(fused if device.type == "cpu" else {}))
    if name == "rmsprop":
        momentum = 0.0 if p.momentum is None else p.momentum
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fused)
    raise ValueError(f"optimizer: unknown value {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, p: MLPParams, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch LR schedule: cosine annealing to 0 over ``max_epochs``, or step decay."""
    if p.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    if p.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=p.lr_step_size, gamma=p.lr_gamma
        )
    return None


def l1_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """sum |w| over ``weights`` (the loss adds ``l1 * l1_penalty``)."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def apply_max_norm(layers: list[nn.Linear], max_norm: float) -> None:
    """Rescale each unit's incoming weight vector (a row of W) to L2 norm <= ``max_norm``.

    Rows already within the bound are untouched. For maxout each piece's row is a unit's
    incoming vector and is constrained separately.
    """
    with torch.no_grad():
        for layer in layers:
            w = layer.weight
            norms = torch.linalg.vector_norm(w, dim=1, keepdim=True)
            # clamp(max=1): only shrink; norms of 0 give inf -> 1, leaving zero rows alone.
            w.mul_((max_norm / norms).clamp_(max=1.0))
