"""Tests of the MLP trainer's knobs, one behaviour each: initialisers, dropout, maxout,
L1, clipping, max-norm, zero init, activations, optimisers, normalisation, schedules."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from searchsvc.data.datasets import load_dataset
from searchsvc.trainer import Dataset, EpochReport, FitOptions
from trainers.mlp.epoch import batch_loss
from trainers.mlp.layers import Maxout
from trainers.mlp.optim import apply_max_norm, make_optimizer
from trainers.mlp.params import ACTIVATIONS, OPTIMIZERS, parse_params
from trainers.mlp.training import trainer

FAN = 1000  # a 1000x1000 hidden layer: 10^6 draws pin the std down to ~0.1 %


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic", seed=0)


def hidden_weight(params: Mapping[str, Any], n_features: int = FAN) -> torch.Tensor:
    torch.manual_seed(0)
    net = trainer.build_network({"n_layers": 1, "width": FAN, **params}, n_features, 10)
    return net.blocks[0].linear.weight.detach()


def fit(
    data: Dataset, params: Mapping[str, Any], epochs: int = 1, seed: int = 0
) -> tuple[list[EpochReport], bool]:
    """The reports, and whether the run ended without diverging."""
    reports: list[EpochReport] = []
    options = FitOptions(max_epochs=epochs, seed=seed)
    trainer.fit({"diagnostics": False, **params}, data, reports.append, options)
    return reports, not (reports and reports[-1].diverged)


def final_network(reports: list[EpochReport], params: Mapping[str, Any], data: Dataset):
    net = trainer.build_network({"diagnostics": False, **params}, data.n_features, data.n_classes)
    net.load_state_dict(reports[-1].training_state["model"])
    return net.requires_grad_(False)


# --- initialisers ---------------------------------------------------------------------------


def test_xavier_normal_std_matches_sqrt_2_over_fan_in_plus_fan_out() -> None:
    w = hidden_weight({"init": "xavier_normal"})
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (FAN + FAN)), rel=0.01)


def test_xavier_uniform_std_is_its_bound_over_sqrt_3() -> None:
    w = hidden_weight({"init": "xavier_uniform", "activation": "tanh"})
    bound = math.sqrt(6 / (FAN + FAN))
    assert float(w.abs().max()) <= bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_he_normal_std_matches_sqrt_2_over_fan_in() -> None:
    w = hidden_weight({"init": "he_normal", "activation": "relu"})
    assert float(w.std()) == pytest.approx(math.sqrt(2 / FAN), rel=0.01)
    assert abs(float(w.mean())) < 1e-3


def test_he_normal_std_uses_the_fan_in_of_a_non_square_layer() -> None:
    w = hidden_weight({"init": "he_normal"}, n_features=250)  # W is 1000 x 250
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 250), rel=0.01)


def test_he_uniform_std_matches_sqrt_2_over_fan_in_within_its_bound() -> None:
    w = hidden_weight({"init": "he_uniform"})
    bound = math.sqrt(3) * math.sqrt(2 / FAN)
    assert float(w.abs().max()) <= bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_he_normal_gain_follows_the_leaky_relu_slope() -> None:
    w = hidden_weight({"init": "he_normal", "activation": "leaky_relu", "leaky_slope": 0.5})
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (1 + 0.25) / FAN), rel=0.01)


def test_normal_init_std_is_init_std() -> None:
    w = hidden_weight({"init": "normal", "init_std": 0.05})
    assert float(w.std()) == pytest.approx(0.05, rel=0.01)


def test_zeros_init_sets_every_weight_and_bias_to_zero() -> None:
    net = trainer.build_network({"init": "zeros", "n_layers": 2, "width": 30}, 20, 10)
    assert all(float(p.detach().abs().sum()) == 0.0 for p in net.parameters())


def test_orthogonal_init_has_orthonormal_rows() -> None:
    w = hidden_weight({"init": "orthogonal"})
    assert torch.allclose(w @ w.T, torch.eye(FAN), atol=1e-4)
    wide = hidden_weight({"init": "orthogonal", "width": 300})  # 300 x 1000
    assert torch.allclose(wide @ wide.T, torch.eye(300), atol=1e-4)


def test_biases_start_at_zero_and_output_layer_uses_the_scheme_with_gain_1() -> None:
    torch.manual_seed(0)
    net = trainer.build_network({"n_layers": 1, "width": FAN, "init": "he_normal"}, FAN, 100)
    net.requires_grad_(False)
    assert float(net.blocks[0].linear.bias.abs().sum()) == 0.0
    assert float(net.output.bias.abs().sum()) == 0.0
    assert float(net.output.weight.std()) == pytest.approx(math.sqrt(1 / FAN), rel=0.02)


# --- dropout, maxout, norm ------------------------------------------------------------------


def test_inverted_dropout_preserves_the_mean_in_training_and_is_identity_in_eval() -> None:
    torch.manual_seed(0)
    net = trainer.build_network(
        {"n_layers": 1, "width": 500, "dropout": 0.5, "input_dropout": 0.2}, 50, 3
    )
    x = torch.rand(4000, 50)
    block = net.blocks[0]
    with torch.no_grad():
        clean = block.act(block.linear(x))
        net.train()
        dropped = block(x)
        dropped_input = net.input_dropout(x)
        net.eval()
        eval_out = block(x)
    assert float((dropped == 0).float().mean()) == pytest.approx(
        0.5 + 0.5 * float((clean == 0).float().mean()), abs=0.01
    )
    assert float(dropped.mean()) == pytest.approx(float(clean.mean()), rel=0.02)
    assert float(dropped_input.mean()) == pytest.approx(float(x.mean()), rel=0.02)
    kept = dropped_input != 0
    assert torch.allclose(dropped_input[kept], x[kept] / 0.8)
    assert torch.equal(eval_out, clean)


def test_maxout_takes_the_max_over_each_units_pieces() -> None:
    x = torch.tensor([[1.0, 5.0, 2.0, -1.0, -3.0, 0.0]])
    assert Maxout(3)(x).tolist() == [[5.0, 0.0]]
    assert Maxout(2)(x).tolist() == [[5.0, 2.0, 0.0]]


def test_maxout_network_has_width_times_pieces_linear_outputs_and_width_units() -> None:
    net = trainer.build_network(
        {"n_layers": 2, "width_1": 16, "width_2": 8, "activation": "maxout", "maxout_pieces": 3},
        20,
        10,
    )
    assert net.blocks[0].linear.out_features == 48
    assert net.blocks[1].linear.in_features == 16 and net.blocks[1].linear.out_features == 24
    assert net(torch.rand(5, 20)).shape == (5, 10)
    assert net.blocks[1](net.blocks[0](torch.rand(5, 20))).shape == (5, 8)


@pytest.mark.parametrize(
    ("norm", "kind"), [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("none", nn.Identity)]
)
def test_norm_layer_sits_between_linear_and_activation_and_trains(
    synthetic: Dataset, norm: str, kind: type
) -> None:
    params = {"n_layers": 2, "width": 32, "norm": norm}
    net = trainer.build_network(params, 20, 10)
    assert all(isinstance(block.norm, kind) for block in net.blocks)
    assert list(dict(net.blocks[0].named_children())) == ["linear", "norm", "act", "dropout"]
    # 129 samples with batch 128 leaves a last batch of one, which batch norm cannot train on.
    small = Dataset(
        "small", synthetic.x_train[:129], synthetic.y_train[:129], synthetic.x_val,
        synthetic.y_val, None, None, 10,
    )  # fmt: skip
    reports, completed = fit(small, params)
    assert completed and math.isfinite(reports[-1].metrics["val_loss"])


# --- penalties and constraints --------------------------------------------------------------


def test_l1_adds_exactly_coef_times_sum_of_absolute_weights_to_the_loss() -> None:
    torch.manual_seed(0)
    net = trainer.build_network({"n_layers": 2, "width": 40}, 20, 10)
    with torch.no_grad():
        for block in net.blocks:
            block.linear.bias.fill_(1.0)  # biases are not penalised
    x, y = torch.rand(64, 20), torch.randint(0, 10, (64,))
    plain, ce0, _ = batch_loss(net, x, y, l1=0.0)
    penalised, ce1, _ = batch_loss(net, x, y, l1=0.01)
    weights_l1 = sum(float(layer.weight.detach().abs().sum()) for layer in net.linears())
    assert ce0.item() == ce1.item() == plain.item()
    assert (penalised - plain).item() == pytest.approx(0.01 * weights_l1, rel=1e-5)


def test_l1_training_drives_weights_towards_zero(synthetic: Dataset) -> None:
    base = {"n_layers": 1, "width": 32, "optimizer": "sgd", "lr": 0.05}
    plain, _ = fit(synthetic, base, epochs=2)
    sparse, _ = fit(synthetic, {**base, "l1": 0.1}, epochs=2)
    w_plain = final_network(plain, base, synthetic).blocks[0].linear.weight
    w_sparse = final_network(sparse, base, synthetic).blocks[0].linear.weight
    assert float(w_sparse.abs().sum()) < 0.8 * float(w_plain.abs().sum())


@pytest.mark.parametrize(("clip", "capped"), [(0.5, True), (0, False)])
def test_clip_norm_caps_the_global_gradient_norm_of_a_step(
    synthetic: Dataset, clip: float, capped: bool
) -> None:
    # One full-batch plain-SGD step with lr 1 moves the parameters by exactly the
    # (clipped) gradient, so the update's global norm is the gradient's.
    params = {
        "n_layers": 2, "width": 32, "optimizer": "sgd", "lr": 1.0, "clip_norm": clip,
        "batch_size": len(synthetic.x_train), "init": "normal", "init_std": 1.0,
    }  # fmt: skip
    torch.manual_seed(0)
    before = trainer.build_network(params, 20, 10).state_dict()
    reports, _ = fit(synthetic, params)
    after = reports[0].training_state["model"]
    step = math.sqrt(sum(float((after[k] - before[k]).pow(2).sum()) for k in before))
    if capped:
        assert step == pytest.approx(0.5, rel=1e-3)
    else:
        assert step > 1.0


@pytest.mark.parametrize("activation", ["relu", "maxout"])
def test_max_norm_holds_for_every_hidden_unit_after_each_step(
    synthetic: Dataset, activation: str
) -> None:
    params = {"n_layers": 2, "width": 32, "optimizer": "sgd", "lr": 0.1, "activation": activation}

    def largest_row_norm(reports: list[EpochReport]) -> float:
        net = final_network(reports, params, synthetic)
        return max(float(layer.weight.norm(dim=1).max()) for layer in net.hidden_linears())

    loose, _ = fit(synthetic, params)
    capped, _ = fit(synthetic, {**params, "max_norm": 0.5})
    assert largest_row_norm(loose) > 0.5
    assert largest_row_norm(capped) <= 0.5 + 1e-5


def test_apply_max_norm_rescales_only_rows_over_the_bound() -> None:
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]))
    apply_max_norm([layer], 1.0)
    assert torch.allclose(layer.weight, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


# --- zero init: the symmetry lesson ---------------------------------------------------------


def test_zeros_init_keeps_hidden_units_identical_through_training(synthetic: Dataset) -> None:
    params = {"n_layers": 2, "width": 16, "init": "zeros", "activation": "sigmoid",
              "optimizer": "sgd", "lr": 0.5}  # fmt: skip
    reports, completed = fit(synthetic, params, epochs=3)
    assert completed
    net = final_network(reports, params, synthetic)
    for layer in net.hidden_linears():
        w = layer.weight
        assert float(w.abs().sum()) > 0  # it did learn something ...
        assert torch.allclose(w, w[:1].expand_as(w), atol=1e-6)  # ... identically in every unit
    out = net.output.weight
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


def test_zeros_init_with_relu_gets_no_hidden_gradient_and_does_not_crash(
    synthetic: Dataset,
) -> None:
    params = {"n_layers": 2, "width": 16, "init": "zeros", "activation": "relu"}
    reports, completed = fit(synthetic, params, epochs=2)
    assert completed
    net = final_network(reports, params, synthetic)
    assert all(float(layer.weight.abs().sum()) == 0.0 for layer in net.hidden_linears())


# --- every activation and optimiser ---------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_builds_and_trains(synthetic: Dataset, activation: str) -> None:
    params = {"n_layers": 2, "width": 32, "activation": activation, "lr": 0.01}
    reports, completed = fit(synthetic, params, epochs=2)
    assert completed
    assert reports[-1].metrics["val_loss"] < reports[0].metrics["val_loss"] or (
        reports[-1].metrics["val_accuracy"] > 0.5
    )


OPTIMIZER_LR = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.05,
                "rmsprop": 1e-3, "adam": 3e-3, "adamw": 3e-3}  # fmt: skip


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_reduces_the_validation_loss(synthetic: Dataset, optimizer: str) -> None:
    params = {"n_layers": 1, "width": 32, "optimizer": optimizer, "lr": OPTIMIZER_LR[optimizer]}
    reports, _ = fit(synthetic, params, epochs=3)
    losses = [r.metrics["val_loss"] for r in reports]
    assert losses[-1] < losses[0] < 10


@pytest.mark.parametrize(
    ("name", "cls", "momentum", "nesterov"),
    [
        ("sgd", torch.optim.SGD, 0.0, False),
        ("momentum", torch.optim.SGD, 0.9, False),
        ("nesterov", torch.optim.SGD, 0.9, True),
        ("rmsprop", torch.optim.RMSprop, 0.0, None),
        ("adagrad", torch.optim.Adagrad, None, None),
        ("adam", torch.optim.Adam, None, None),
        ("adamw", torch.optim.AdamW, None, None),
    ],
)
def test_optimizer_names_map_to_torch_optimizers_with_documented_momentum(
    name: str, cls: type, momentum: float | None, nesterov: bool | None
) -> None:
    params = {"optimizer": name, "weight_decay": 0.1, "activation": "prelu"}
    p = parse_params(params)
    net = trainer.build_network(params, 20, 10)
    opt = make_optimizer(net, p, torch.device("cpu"))
    assert type(opt) is cls
    group = opt.param_groups[0]
    if momentum is not None:
        assert group["momentum"] == momentum
    if nesterov is not None:
        assert group["nesterov"] is nesterov
    # weight decay on the linear weights only (not biases, not PReLU slopes)
    decayed = {id(q) for g in opt.param_groups if g["weight_decay"] > 0 for q in g["params"]}
    assert decayed == {id(layer.weight) for layer in net.linears()}


def test_rmsprop_uses_momentum_only_when_given() -> None:
    net = trainer.build_network({}, 20, 10)
    opt = make_optimizer(
        net, parse_params({"optimizer": "rmsprop", "momentum": 0.5}), torch.device("cpu")
    )
    assert opt.param_groups[0]["momentum"] == 0.5


# --- schedules and params -------------------------------------------------------------------


def test_cosine_schedule_anneals_the_lr_over_max_epochs(synthetic: Dataset) -> None:
    reports, _ = fit(synthetic, {"width": 16, "lr": 0.1, "lr_schedule": "cosine"}, epochs=4)
    lrs = [r.metrics["lr"] for r in reports]
    expected = [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_step_schedule_multiplies_the_lr_by_gamma_every_step_size_epochs(
    synthetic: Dataset,
) -> None:
    params = {"width": 16, "lr": 0.1, "lr_schedule": "step", "lr_step_size": 2, "lr_gamma": 0.5}
    reports, _ = fit(synthetic, params, epochs=5)
    assert [r.metrics["lr"] for r in reports] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_unknown_param_raises_value_error_naming_the_key() -> None:
    with pytest.raises(ValueError, match="'widht'"):
        parse_params({"widht": 10})
    with pytest.raises(ValueError, match="activation"):
        parse_params({"activation": "swish"})
    with pytest.raises(ValueError, match="dropout"):
        parse_params({"dropout": 1.0})


def test_params_defaults_per_layer_widths_and_ignored_keys() -> None:
    p = parse_params({"n_layers": 3, "width": 64, "width_2": 32.0, "width_7": 5})
    assert p.widths == (64, 32, 64)
    assert p.init == "he_normal" and p.optimizer == "adam" and p.lr == 1e-3
    assert parse_params({"activation": "tanh"}).init == "xavier_uniform"
    assert parse_params({}).widths == (256, 256)
    with pytest.raises(ValueError, match="n_layers"):
        parse_params({"n_layers": 2.5})


def test_patience_stops_when_val_loss_stops_improving(synthetic: Dataset) -> None:
    # lr 1e-30: updates vanish in float32, so the val loss stays exactly at epoch 1's.
    params = {"width": 16, "optimizer": "sgd", "lr": 1e-30, "patience": 2}
    reports, completed = fit(synthetic, params, epochs=10)
    assert len(reports) == 3 and completed
    # Only epoch 1 improved: its weights are the ones kept.
    assert [r.best_state is not None for r in reports] == [True, False, False]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dropout": 1.5}, "dropout: must be < 1.0, got 1.5"),
        ({"width_2": 0}, "width_2: must be >= 1, got 0"),
        ({"n_layers": 2.5}, "n_layers: expected an integer, got 2.5"),
        ({"lr": True}, "lr: expected a number, got True"),
        ({"lr": float("nan")}, "lr: must be finite, got nan"),
        ({"norm": "group"}, "norm: unknown value 'group'; expected one of none, batch, layer"),
        ({"optimizer": "nesterov", "momentum": 0.0}, "momentum: nesterov needs momentum > 0"),
    ],
)
def test_a_bad_param_is_one_line_naming_the_key_and_the_value(params, message) -> None:
    with pytest.raises(ValueError) as info:
        parse_params(params)
    assert str(info.value) == message
