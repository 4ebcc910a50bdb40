"""Tests of the ``rbm`` initialiser: CD-k training, greedy stacking, the copy into the MLP,
its params and metrics, determinism and resume, and a study that compares it in a grid."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from searchsvc.data.datasets import load_dataset
from searchsvc.study.loader import load_study
from searchsvc.trainer import Dataset, EpochReport, FitOptions
from tests.helpers import REPO, base_study
from trainers.mlp import training as mlp_module
from trainers.mlp.params import INITS, parse_params
from trainers.mlp.rbm import BernoulliRBM, pretrain_stack, rbm_generator, rbm_initialise
from trainers.mlp.training import trainer

RBM = {"init": "rbm", "activation": "sigmoid", "n_layers": 2, "width_1": 32, "width_2": 16,
       "diagnostics": False}  # fmt: skip
TIME_KEYS = {"epoch_time_s", "train_time_s", "rbm_pretrain_time_s"}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    """Scikit-learn's 8x8 digits, pixels / 16: small and in [0, 1]."""
    return load_dataset("digits", seed=0).without_test()


def prototypes(n: int = 200, n_visible: int = 16, flip: float = 0.05) -> torch.Tensor:
    """``n`` noisy copies of 4 binary prototypes: each bit flipped with probability ``flip``."""
    g = torch.Generator().manual_seed(0)
    protos = torch.bernoulli(torch.full((4, n_visible), 0.5), generator=g)
    x = protos[torch.arange(n) % 4]
    flips = torch.bernoulli(torch.full_like(x, flip), generator=g)
    return (x + flips) % 2


def run(
    data: Dataset,
    params: Mapping[str, Any],
    epochs: int,
    seed: int = 0,
    resume_from: Mapping[str, Any] | None = None,
) -> tuple[list[EpochReport], int]:
    """The reports, and the best epoch (of the latest report with weights; 0 if none)."""
    reports: list[EpochReport] = []
    trainer.fit(params, data, reports.append, FitOptions(epochs, seed, resume_from=resume_from))
    return reports, max((r.epoch for r in reports if r.best_state is not None), default=0)


def untimed(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in TIME_KEYS}


# --- the RBM itself -------------------------------------------------------------------------


def test_cd1_updates_lower_the_reconstruction_error_of_noisy_prototypes() -> None:
    x = prototypes()
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(16, 8, generator=g)
    initial = rbm.reconstruction_error(x)
    for _ in range(10):  # 10 epochs of batches of 10: 200 plain CD-1 updates
        for start in range(0, len(x), 10):
            rbm.cd_step(x[start : start + 10], k=1, lr=0.1, generator=g)
    assert rbm.reconstruction_error(x) < 0.8 * initial


def test_cd_k_with_momentum_also_learns_and_returns_the_batch_error() -> None:
    x = prototypes()
    g = torch.Generator().manual_seed(1)
    rbm = BernoulliRBM(16, 8, generator=g)
    initial = rbm.reconstruction_error(x)
    for _ in range(5):
        for start in range(0, len(x), 10):
            batch_error = rbm.cd_step(
                x[start : start + 10], k=3, lr=0.1, generator=g, momentum=0.5
            )
    assert batch_error.ndim == 0 and 0.0 <= float(batch_error) <= 1.0
    assert rbm.reconstruction_error(x) < 0.8 * initial


def test_reconstruction_error_is_the_mse_of_the_mean_field_reconstruction() -> None:
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(6, 4, generator=g)
    v = torch.rand(5, 6, generator=g)
    recon = torch.sigmoid(torch.sigmoid(v @ rbm.weight.T + rbm.hidden_bias) @ rbm.weight)
    assert rbm.reconstruction_error(v) == pytest.approx(float((v - recon).pow(2).mean()))


def test_pretrain_stack_trains_each_layer_on_the_previous_hidden_probabilities() -> None:
    x = prototypes()
    kwargs = {"epochs": 4, "lr": 0.1, "k": 1, "batch_size": 10}
    layers = pretrain_stack(x, [8, 4], generator=torch.Generator().manual_seed(0), **kwargs)
    assert [tuple(layer.weight.shape) for layer in layers] == [(8, 16), (4, 8)]
    assert [tuple(layer.hidden_bias.shape) for layer in layers] == [(8,), (4,)]
    assert all(len(layer.recon_errors) == 4 for layer in layers)
    first = layers[0]
    assert first.recon_errors[-1] < first.recon_errors[0]
    # Layer 2 alone, on layer 1's mean-field hidden probabilities, gives the same RBM when
    # the generator stands where the stack's stood after layer 1.
    g = torch.Generator().manual_seed(0)
    pretrain_stack(x, [8], generator=g, **kwargs)
    hidden = torch.sigmoid(x @ first.weight.T + first.hidden_bias)
    (second,) = pretrain_stack(hidden, [4], generator=g, **kwargs)
    assert torch.allclose(second.weight, layers[1].weight, atol=1e-6)
    # Same generator seed, same stack.
    again = pretrain_stack(x, [8, 4], generator=torch.Generator().manual_seed(0), **kwargs)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(layers, again, strict=True))


def test_pretrain_stack_refuses_inputs_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"needs input features in \[0, 1\]"):
        pretrain_stack(
            torch.randn(50, 4), [3], epochs=1, lr=0.1, k=1, batch_size=10,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip


# --- the initialiser in the MLP -------------------------------------------------------------


def test_rbm_initialise_copies_each_rbms_weights_and_hidden_biases_into_its_layer(
    digits: Dataset,
) -> None:
    p = parse_params({**RBM, "rbm_epochs": 2, "rbm_samples": 500})
    torch.manual_seed(0)
    net = trainer.build_network(RBM, digits.n_features, digits.n_classes)
    output_before = net.output.weight.detach().clone()
    stats = rbm_initialise(net, digits.x_train, p, torch.Generator().manual_seed(0))
    assert len(stats.layers) == 2 and stats.time_s > 0
    for block, layer in zip(net.blocks, stats.layers, strict=True):
        assert torch.equal(block.linear.weight.detach(), layer.weight)
        assert torch.equal(block.linear.bias.detach(), layer.hidden_bias)
        assert len(layer.recon_errors) == 2
    assert torch.equal(net.output.weight.detach(), output_before)  # no RBM for the logits
    assert set(stats.metrics()) == {"rbm_pretrain_time_s", "rbm_recon_error_1",
                                    "rbm_recon_error_2"}  # fmt: skip


def test_fit_starts_from_the_pretrained_rbm_weights(digits: Dataset) -> None:
    # lr 1e-30 leaves every weight bit-for-bit as it started: the epoch's state is the init.
    params = {**RBM, "optimizer": "sgd", "lr": 1e-30}
    reports, _ = run(digits, params, 1, seed=3)
    model = reports[0].training_state["model"]
    torch.manual_seed(0)
    net = trainer.build_network(params, digits.n_features, digits.n_classes)
    stats = rbm_initialise(net, digits.x_train, parse_params(params), rbm_generator(3))
    assert torch.equal(model["blocks.0.linear.weight"], stats.layers[0].weight)
    assert torch.equal(model["blocks.1.linear.weight"], stats.layers[1].weight)
    assert torch.equal(model["blocks.0.linear.bias"], stats.layers[0].hidden_bias)
    metrics = reports[0].metrics
    assert metrics["rbm_recon_error_1"] == stats.layers[0].recon_errors[-1]


def test_build_network_does_no_pretraining_and_uses_xavier_for_the_output() -> None:
    torch.manual_seed(0)
    net = trainer.build_network({"init": "rbm", "n_layers": 1, "width": 1000}, 1000, 100)
    # relu's default (he_normal) stands in for the hidden layer until fit pre-trains it.
    w = net.blocks[0].linear.weight.detach()
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 1000), rel=0.01)
    bound = math.sqrt(6 / (1000 + 100))
    assert float(net.output.weight.detach().abs().max()) <= bound
    assert float(net.output.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_maxout_with_rbm_is_rejected_with_a_clear_message() -> None:
    message = "init rbm pairs with sigmoid (classic), tanh or the ReLU family, not maxout"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params({"init": "rbm", "activation": "maxout"})
    with pytest.raises(ValueError, match="not maxout"):
        trainer.check_params({"init": "rbm", "activation": "maxout", "maxout_pieces": 3})
    for activation in ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu"):
        assert parse_params({"init": "rbm", "activation": activation}).init == "rbm"


@pytest.mark.parametrize(
    ("key", "value"),
    [("rbm_epochs", 0), ("rbm_lr", 0.0), ("rbm_lr", -0.1), ("rbm_k", 0), ("rbm_samples", 0)],
)
def test_rbm_params_must_be_positive_and_errors_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{key}: must be"):
        parse_params({"init": "rbm", key: value})


def test_rbm_params_have_their_defaults_and_rbm_is_an_init_choice() -> None:
    p = parse_params({"init": "rbm"})
    assert (p.rbm_epochs, p.rbm_lr, p.rbm_k, p.rbm_samples) == (3, 0.05, 1, 10000)
    assert "rbm" in INITS
    assert parse_params({"rbm_k": 2.0}).rbm_k == 2  # samplers may hand ints over as floats


def test_inputs_outside_the_unit_interval_are_refused_by_fit() -> None:
    synthetic = load_dataset("synthetic", seed=0)  # Gaussian clusters: negative features
    with pytest.raises(ValueError, match=r"init rbm needs input features in \[0, 1\]"):
        run(synthetic, RBM, 1)


# --- metrics, determinism, resume -----------------------------------------------------------


def test_pretraining_time_and_reconstruction_errors_are_reported_every_epoch(
    digits: Dataset,
) -> None:
    # 10 RBM epochs over 1,150 samples for two layers, against one supervised pass: the
    # pre-training, measured apart, takes longer than a whole supervised epoch.
    reports, _ = run(digits, {**RBM, "rbm_epochs": 10}, 2)
    assert [r.diverged for r in reports] == [False, False]
    first, second = (r.metrics for r in reports)
    for metrics in (first, second):
        assert trainer.objective_metrics <= set(metrics)
        assert {"rbm_pretrain_time_s", "rbm_recon_error_1", "rbm_recon_error_2"} <= set(metrics)
        assert "rbm_recon_error_3" not in metrics
    assert first["rbm_pretrain_time_s"] > 0
    assert first["rbm_pretrain_time_s"] > first["epoch_time_s"]
    assert 0.0 < first["rbm_recon_error_1"] < 1.0
    # Measured once: the same constants on every epoch.
    assert {k: first[k] for k in first if k.startswith("rbm_")} == {
        k: second[k] for k in second if k.startswith("rbm_")
    }


def test_other_inits_report_no_rbm_metrics(digits: Dataset) -> None:
    reports, _ = run(digits, {**RBM, "init": "xavier_normal"}, 1)
    assert not any(k.startswith("rbm_") for k in reports[0].metrics)


def test_same_params_and_seed_give_identical_curves_with_rbm(digits: Dataset) -> None:
    params = {**RBM, "dropout": 0.2}
    a, _ = run(digits, params, 2, seed=7)
    b, _ = run(digits, params, 2, seed=7)
    c, _ = run(digits, params, 2, seed=8)
    assert [untimed(r.metrics) for r in a] == [untimed(r.metrics) for r in b]
    assert a[0].metrics["rbm_recon_error_1"] != c[0].metrics["rbm_recon_error_1"]
    assert [r.metrics["val_loss"] for r in a] != [r.metrics["val_loss"] for r in c]


def test_resume_skips_pretraining_and_matches_the_uninterrupted_run(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, full_best = run(digits, RBM, 3)
    head, _ = run(digits, RBM, 2)

    def no_pretraining(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a resumed run must not pre-train again")

    monkeypatch.setattr(mlp_module, "rbm_initialise", no_pretraining)
    tail, tail_best = run(digits, RBM, 3, resume_from=head[-1].training_state)
    assert [r.epoch for r in tail] == [3]
    assert untimed(tail[0].metrics) == untimed(full[2].metrics)
    # The resumed run still reports the pre-training that its first part did.
    assert tail[0].metrics["rbm_pretrain_time_s"] == head[0].metrics["rbm_pretrain_time_s"]
    assert tail_best == full_best


# --- in a study -----------------------------------------------------------------------------


def test_a_grid_study_can_put_rbm_beside_xavier_and_he(
    write_study: Callable[..., Path],
) -> None:
    study = base_study(
        trainer="mlp",
        dataset="digits",
        objective={"metric": "val_accuracy", "mode": "max"},
        sampler={"name": "grid"},
        scheduler={"name": "none"},
        search_space={
            "init": {"type": "categorical", "choices": ["rbm", "xavier_normal", "he_normal"]},
            "activation": {"type": "categorical", "choices": ["sigmoid", "relu"]},
            "n_layers": 2,
            "width": 64,
            "rbm_epochs": 2,
            "rbm_k": 1,
            "optimizer": "momentum",
            "lr": 0.1,
        },
    )
    loaded = load_study(write_study(study))
    assert loaded.spec.grid_size() == 6
    assert loaded.spec.search_space["init"].choices == ["rbm", "xavier_normal", "he_normal"]


# --- the benchmark --------------------------------------------------------------------------


def test_rbm_benchmark_prints_the_cost_and_the_accuracies_of_each_init(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("rbm_bench", REPO / "bench/rbm_pretraining.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    threads = str(torch.get_num_threads())  # the bench sets it: leave the session's as it is
    argv = ["--dataset", "digits", "--epochs", "2", "--widths", "16,8", "--inits", "rbm,normal",
            "--rbm-epochs", "2", "--threads", threads]  # fmt: skip
    figures = bench.main(argv)
    assert figures["pretrain_s"] > 0 and figures["epoch_s"] >= figures["train_pass_s"] > 0
    assert figures["ratio_epoch"] == pytest.approx(figures["pretrain_s"] / figures["epoch_s"])
    assert len(figures["recon_errors"]) == 2 and all(0 < e < 1 for e in figures["recon_errors"])
    assert [len(c) for c in figures["val_accuracy"].values()] == [2, 2]
    out = capsys.readouterr().out
    assert "RBM pre-training:" in out and "normal(0.01)" in out and "training passes" in out
