"""The MLP trainer's resumable state: early-stopping bookkeeping, RNG, and the
``training_state`` it reports (plain data: it loads with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainers.mlp.layers import MLP

__all__ = [
    "Progress",
    "capture_rng",
    "cpu_copy",
    "restore_rng",
    "restore_state",
    "training_state",
]

_STATE_FORMAT = "searchsvc.trainers.mlp/1"


@dataclass
class Progress:
    """Early-stopping bookkeeping, carried in ``training_state``."""

    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0


def training_state(
    epoch: int,
    params: Mapping[str, Any],
    model: MLP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    progress: Progress,
    rng: Mapping[str, Any],
    finished: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Everything ``FitOptions.resume_from`` needs, as CPU copies that training won't touch."""
    return {
        "format": _STATE_FORMAT,
        "epoch": epoch,
        "params": dict(params),
        "model": cpu_copy(model.state_dict()),
        "optimizer": cpu_copy(optimizer.state_dict()),
        "scheduler": None if scheduler is None else copy.deepcopy(scheduler.state_dict()),
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "best_state": progress.best_state,  # a snapshot, never modified once taken
        "bad_epochs": progress.bad_epochs,
        "rng": rng,
        "finished": finished,  # set on the epoch that ended the run: a resume just returns
    }


def cpu_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists of tensors, every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def capture_rng(shuffle: torch.Generator, dev: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def restore_rng(state: Mapping[str, Any], shuffle: torch.Generator, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if dev.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], dev)


def restore_state(
    state: Mapping[str, Any],
    model: MLP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    shuffle: torch.Generator,
    progress: Progress,
) -> Mapping[str, str] | None:
    """Load a ``training_state``; returns its ``finished`` entry (None if training goes on)."""
    if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
        raise ValueError(f"resume_from is not an MLP training_state ({_STATE_FORMAT})")
    model.load_state_dict(state["model"])
    # A copy: the optimiser may adopt the given tensors and update them in place, which
    # would alter the caller's training_state.
    optimizer.load_state_dict(cpu_copy(state["optimizer"]))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    shuffle.set_state(state["rng"]["shuffle"])
    progress.best_val_loss = float(state["best_val_loss"])
    progress.best_epoch = int(state["best_epoch"])
    progress.best_state = state["best_state"]
    progress.bad_epochs = int(state["bad_epochs"])
    return state.get("finished")
