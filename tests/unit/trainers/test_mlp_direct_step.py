"""The MLP trainer's direct fused Adam/AdamW step gives the same numbers, bit for bit, as
``optimizer.step``, and steps aside for every case it does not cover."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import trainers.mlp.epoch as mlp_epoch
from searchsvc.data.datasets import load_dataset
from searchsvc.trainer import Dataset, EpochReport, FitOptions
from trainers.mlp.layers import build_mlp
from trainers.mlp.optim import make_optimizer, step_function
from trainers.mlp.params import parse_params
from trainers.mlp.training import trainer

BASE = {"n_layers": 2, "width": 24, "diagnostics": False, "batch_size": 32, "patience": 0}


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic", seed=0)


def _fit(params: dict[str, Any], data: Dataset, epochs: int = 3) -> list[EpochReport]:
    reports: list[EpochReport] = []
    trainer.fit(params, data, reports.append, FitOptions(max_epochs=epochs, seed=3))
    return reports


def _same(a: list[EpochReport], b: list[EpochReport]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        timeless = {k for k in ra.metrics if not k.endswith("_time_s")}
        assert {k: ra.metrics[k] for k in timeless} == {k: rb.metrics[k] for k in timeless}
        state_a, state_b = ra.training_state, rb.training_state
        assert state_a is not None and state_b is not None
        for key, value in state_a["model"].items():
            assert torch.equal(value, state_b["model"][key]), key
        for i, per_param in state_a["optimizer"]["state"].items():
            for key, value in per_param.items():
                assert torch.equal(value, state_b["optimizer"]["state"][i][key]), (i, key)


@pytest.mark.parametrize(
    "extra",
    [
        {"optimizer": "adam"},
        {"optimizer": "adam", "weight_decay": 1e-3, "lr_schedule": "cosine"},
        {"optimizer": "adamw", "weight_decay": 1e-2, "lr_schedule": "step", "lr_step_size": 1},
        {"optimizer": "adam", "clip_norm": 0.5, "max_norm": 2.0, "l1": 1e-4},
    ],
)
def test_the_direct_step_matches_optimizer_step_bit_for_bit(
    synthetic: Dataset, extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {**BASE, **extra}
    with warnings.catch_warnings():
        # The scheduler warns if it steps before the optimiser has: the direct path must
        # still let it see the real step.
        warnings.simplefilter("error")
        direct = _fit(params, synthetic)
    monkeypatch.setattr(mlp_epoch, "step_function", lambda opt: opt.step)
    plain = _fit(params, synthetic)
    _same(direct, plain)


def test_a_resumed_run_takes_the_direct_step_from_the_restored_state(synthetic: Dataset) -> None:
    whole = _fit(BASE, synthetic, epochs=3)
    resumed: list[EpochReport] = []
    state = whole[0].training_state
    options = FitOptions(max_epochs=3, seed=3, resume_from=state)
    trainer.fit(BASE, synthetic, resumed.append, options)
    _same(whole[1:], resumed)


def _optimizer(**changes: Any) -> torch.optim.Optimizer:
    p = parse_params({**BASE, **changes})
    return make_optimizer(build_mlp(p, 4, 3), p, torch.device("cpu"))


@pytest.mark.parametrize("changes", [{"optimizer": "sgd"}, {"optimizer": "rmsprop"}])
def test_other_optimisers_get_their_own_step(changes: dict[str, Any]) -> None:
    opt = _optimizer(**changes)
    assert step_function(opt) == opt.step


def test_an_optimiser_with_a_hook_or_amsgrad_gets_its_own_step() -> None:
    opt = _optimizer()
    handle = opt.register_step_post_hook(lambda *_: None)
    assert step_function(opt) == opt.step
    handle.remove()
    assert step_function(opt) != opt.step
    opt.param_groups[0]["amsgrad"] = True
    assert step_function(opt) == opt.step
