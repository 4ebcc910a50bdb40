"""Tests of the MLP trainer's speed paths: ``precision: bfloat16``, the hand-written dropout
and the denormal flush while fitting. Each must leave what is trained and reported intact."""

from __future__ import annotations

import pytest
import torch

from searchsvc.data.datasets import load_dataset
from searchsvc.trainer import Dataset, EpochReport, FitOptions
from trainers.mlp import training
from trainers.mlp.layers import Dropout
from trainers.mlp.training import trainer

PARAMS = {"n_layers": 2, "width": 64, "dropout": 0.2, "diagnostics": False, "patience": 0}


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic", seed=0)


def fit(data: Dataset, params: dict, epochs: int, report=None) -> list[EpochReport]:
    reports: list[EpochReport] = []

    def keep(rep: EpochReport) -> None:
        reports.append(rep)
        if report is not None:
            report(rep)

    trainer.fit(params, data, keep, FitOptions(max_epochs=epochs, seed=0))
    return reports


def test_bfloat16_runs_the_training_pass_in_bfloat16_and_evaluates_and_stores_float32(
    synthetic: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, torch.dtype]] = []  # (training mode, first linear's output dtype)
    build = training.build_mlp

    def hooked(*args: object) -> torch.nn.Module:
        net = build(*args)
        net.blocks[0].linear.register_forward_hook(
            lambda module, _in, out: seen.append((module.training, out.dtype))
        )
        return net

    monkeypatch.setattr(training, "build_mlp", hooked)
    reports = fit(synthetic, {**PARAMS, "precision": "bfloat16"}, 2)

    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    state = reports[-1].training_state
    assert {t.dtype for t in reports[-1].best_state.values()} == {torch.float32}
    moments = [
        t for s in state["optimizer"]["state"].values() for k, t in s.items() if k != "step"
    ]
    assert moments and {t.dtype for t in moments} == {torch.float32}


def test_bfloat16_learns_as_float32_does(synthetic: Dataset) -> None:
    exact = fit(synthetic, PARAMS, 4)[-1].metrics
    mixed = fit(synthetic, {**PARAMS, "precision": "BFloat16"}, 4)[-1].metrics
    assert mixed["val_loss"] != exact["val_loss"]  # it did run another computation
    assert mixed["val_loss"] == pytest.approx(exact["val_loss"], rel=0.05)
    assert mixed["val_accuracy"] == pytest.approx(exact["val_accuracy"], abs=0.02)


def test_a_precision_other_than_float32_or_bfloat16_is_rejected_by_name(
    synthetic: Dataset,
) -> None:
    with pytest.raises(ValueError) as raised:
        fit(synthetic, {**PARAMS, "precision": "float16"}, 1)
    assert str(raised.value) == (
        "precision: unknown value 'float16'; expected one of float32, bfloat16"
    )


FLUSH_SUPPORTED = torch.set_flush_denormal(False)  # False on CPUs without FTZ/DAZ


def twice_a_denormal() -> float:
    return float((torch.tensor([1e-39]) * 2)[0])


@pytest.mark.skipif(not FLUSH_SUPPORTED, reason="this CPU cannot flush denormals")
def test_denormals_are_flushed_to_zero_while_fitting_and_not_after(synthetic: Dataset) -> None:
    during: list[float] = []
    fit(synthetic, PARAMS, 2, report=lambda _rep: during.append(twice_a_denormal()))
    assert during == [0.0, 0.0]
    assert twice_a_denormal() == pytest.approx(2e-39, rel=1e-3)


@pytest.mark.skipif(not FLUSH_SUPPORTED, reason="this CPU cannot flush denormals")
def test_a_fit_leaves_the_flush_on_when_the_caller_had_turned_it_on(synthetic: Dataset) -> None:
    torch.set_flush_denormal(True)
    try:
        fit(synthetic, PARAMS, 1)
        assert twice_a_denormal() == 0.0
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize(
    "extra",
    [
        {"norm": "batch", "activation": "maxout", "l1": 1e-5},
        {"norm": "layer", "activation": "prelu", "diagnostics": True},
        {"activation": "leaky_relu", "clip_norm": 1.0, "optimizer": "nesterov"},
    ],
)
def test_bfloat16_trains_every_layer_kind_to_finite_float32_weights(
    synthetic: Dataset, extra: dict
) -> None:
    reports = fit(synthetic, {**PARAMS, **extra, "precision": "bfloat16"}, 2)
    assert not reports[-1].diverged
    assert reports[-1].metrics["val_loss"] < reports[0].metrics["train_loss"] * 2
    for tensor in reports[-1].best_state.values():
        assert tensor.dtype in (torch.float32, torch.int64) and bool(torch.isfinite(tensor).all())


def test_a_bfloat16_trial_resumes_identically(synthetic: Dataset) -> None:
    params = {**PARAMS, "precision": "bfloat16", "lr_schedule": "cosine"}
    whole = fit(synthetic, params, 3)
    state = whole[0].training_state
    tail: list[EpochReport] = []
    options = FitOptions(max_epochs=3, seed=0, resume_from=state)
    trainer.fit(params, synthetic, tail.append, options)
    assert [r.epoch for r in tail] == [2, 3]
    assert [r.metrics["val_loss"] for r in tail] == [r.metrics["val_loss"] for r in whole[1:]]


def test_dropout_keeps_each_value_with_the_keep_rate_scaled_and_passes_gradient_through_it() -> (
    None
):
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.full((400, 500), 2.0, requires_grad=True)
    out = drop(x)
    out.sum().backward()
    kept = out != 0
    assert float(kept.float().mean()) == pytest.approx(0.7, abs=0.005)
    assert torch.allclose(out[kept], torch.tensor(2.0 / 0.7))
    assert torch.allclose(x.grad[kept], torch.tensor(1 / 0.7))
    assert torch.equal(x.grad[~kept], torch.zeros(int((~kept).sum())))
    assert torch.equal(drop.eval()(x), x)
    bf16 = drop.train()(x.detach().bfloat16())
    assert bf16.dtype == torch.bfloat16
    # 2 / 0.7 rounded to bfloat16 (8 bits of mantissa): the scale's error is bfloat16's own.
    assert set(bf16.unique().tolist()) == {0.0, float(torch.tensor(2 / 0.7).bfloat16())}
