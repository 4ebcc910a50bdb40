"""Optimisers, learning-rate schedules and the weight constraints/penalties of the MLP.

Weight decay (L2, through the optimiser's ``weight_decay``) and the L1 penalty apply to the
linear layers' weights only: biases, normalisation parameters and PReLU slopes are not
shrunk, as is usual practice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.optim.optimizer as torch_optimizer
from torch import nn

from trainers.mlp.layers import MLP
from trainers.mlp.params import MLPParams

__all__ = ["apply_max_norm", "l1_penalty", "make_optimizer", "make_scheduler", "step_function"]

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


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step`` for one epoch, with the wrapper's per-call Python cut where safe.

    A fused Adam/AdamW step on the CPU spends 0.04-0.1 ms in ``torch.optim``'s Python
    (profiler context, hook loops, per-group ``_init_group`` and device grouping) around its
    kernels: measured in the training loop, ~12% of a 784-64-10 network's step at batch 128,
    ~2% of bench/trainer_speed.py's 784-512-256-10. For that case the returned
    function calls the same kernels with the same arguments, in the same order, as
    ``torch.optim.Adam``'s fused path (``_foreach_add_`` on the step counts, then
    ``_fused_adam_``/``_fused_adamw_``), so every weight comes out bit for bit the same. It
    takes the real ``optimizer.step`` for the epoch's first step (which creates the state on
    a trial's first step and tells an LR scheduler the optimiser ran) and whenever a
    gradient is missing; any other optimiser or setting (amsgrad, maximize, capturable,
    hooks, a tensor lr, a device other than the CPU) simply gets ``optimizer.step``.
    """
    if not _direct_step_applies(optimizer):
        return optimizer.step
    # Per group: (group, params, exp_avgs, exp_avg_sqs, steps); the state tensors are
    # updated in place, so the lists hold for the epoch once the state exists.
    groups: list[tuple[dict[str, Any], list[torch.Tensor], ...]] = []

    def step() -> None:
        grads = [[q.grad for q in g["params"]] for g in optimizer.param_groups]
        if not groups or any(gr is None for per_group in grads for gr in per_group):
            optimizer.step()
            if not groups:
                groups.extend(_state_lists(optimizer))
            return
        with torch.no_grad():
            for (group, params, exp_avgs, exp_avg_sqs, steps), group_grads in zip(
                groups, grads, strict=True
            ):
                torch._foreach_add_(steps, 1)
                fused = (
                    torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
                )
                beta1, beta2 = group["betas"]
                fused(
                    params, group_grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                    lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                    eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
                )  # fmt: skip

    return step


def _state_lists(optimizer: torch.optim.Optimizer) -> list[tuple[Any, ...]]:
    """Each group's (group, params, exp_avgs, exp_avg_sqs, steps); [] while some state is
    missing (a parameter that has had no gradient yet), which keeps the real step in use."""
    out = []
    for group in optimizer.param_groups:
        params = list(group["params"])
        states = [optimizer.state.get(q) for q in params]  # .get: never adds an empty entry
        if any(s is None or not {"step", "exp_avg", "exp_avg_sq"} <= s.keys() for s in states):
            return []
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        out.append((group, params, exp_avgs, exp_avg_sqs, [s["step"] for s in states]))
    return out


def _direct_step_applies(optimizer: torch.optim.Optimizer) -> bool:
    """Whether :func:`step_function` may call the fused Adam/AdamW kernels itself."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    hooks = (
        optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks,
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
    )  # fmt: skip
    if any(h is None or len(h) > 0 for h in hooks):
        return False
    if getattr(optimizer, "grad_scale", None) is not None:
        return False
    if getattr(optimizer, "found_inf", None) is not None:
        return False
    for group in optimizer.param_groups:
        plain = group.get("fused") and not group.get("amsgrad") and not group.get("maximize")
        plain = plain and not group.get("capturable") and not group.get("differentiable")
        if not plain or "decoupled_weight_decay" not in group:
            return False
        if not isinstance(group["lr"], float) or isinstance(group["betas"][0], torch.Tensor):
            return False
        if any(q.device.type != "cpu" or q.dtype != torch.float32 for q in group["params"]):
            return False
    return True
