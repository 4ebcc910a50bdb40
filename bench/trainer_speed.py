"""How close the MLP trainer's hot loop gets to the machine's matmul rate, in one thread.

Trains a 784-512-256-10 ReLU network (batch 128, Adam, no dropout/norm, diagnostics off) on
full MNIST (50,000 training samples after the 10,000 validation carve) through the real
``MLPTrainer.fit`` for two epochs and takes the second (warm) epoch's training-pass time. In
the same run it times the GEMMs of one training step on the same shapes with ``torch.mm``
(best of several repeats) and prints the trainer's achieved GFLOP/s as a share of that rate.

FLOPs per step count 3x the forward pass (forward + backward), 2*B*(784*512 + 512*256 +
256*10) per forward, as is conventional; the gradient with respect to the input images is
never computed, so the trainer actually executes slightly fewer (printed too).

Run: ``python bench/trainer_speed.py`` (data from $SEARCHSVC_DATA_DIR, else ../shared/data).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from searchsvc.data.datasets import load_dataset  # noqa: E402
from searchsvc.trainer import EpochReport, FitOptions  # noqa: E402
from trainers.mlp.training import trainer  # noqa: E402

BATCH = 128
LAYERS = (784, 512, 256, 10)
PARAMS = {
    "n_layers": 2,
    "width_1": 512,
    "width_2": 256,
    "activation": "relu",
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": BATCH,
    "dropout": 0.0,
    "input_dropout": 0.0,
    "norm": "none",
    "patience": 0,
    "diagnostics": False,
}


def forward_flops(batch: int) -> int:
    """Multiply-adds x 2 of one forward pass of the benchmark network."""
    return 2 * batch * sum(a * b for a, b in zip(LAYERS[:-1], LAYERS[1:], strict=True))


def gemm_rate(batch: int, repeats: int = 7, iters: int = 30) -> tuple[float, float]:
    """(GFLOP/s of all nine fwd+bwd GEMMs, GFLOP/s of the eight a training step runs).

    Each GEMM uses the operand layouts autograd uses for ``nn.Linear`` (weights stored
    out x in): forward x @ W^T, input grad g @ W, weight grad g^T @ x. Best of ``repeats``.
    """
    gemms: list[tuple[torch.Tensor, torch.Tensor, bool]] = []  # (a, b, run by the trainer)
    for layer, (fan_in, fan_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:], strict=True)):
        x = torch.randn(batch, fan_in)
        w = torch.randn(fan_out, fan_in)
        g = torch.randn(batch, fan_out)
        gemms.append((x, w.t(), True))  # forward
        gemms.append((g, w, layer > 0))  # grad wrt the layer input (not for the images)
        gemms.append((g.t(), x, True))  # grad wrt the weight
    rates = []
    for run_only in (False, True):
        chosen = [(a, b) for a, b, run in gemms if run or not run_only]
        flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in chosen) * iters
        for a, b in chosen:  # warm-up: oneDNN/MKL pick their kernels on first use
            torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                for a, b in chosen:
                    torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        rates.append(flops / best / 1e9)
    return rates[0], rates[1]


def adam_step_ms(repeats: int = 7, iters: int = 50) -> float:
    """Milliseconds per fused Adam step over the benchmark network's parameters (best of)."""
    net = trainer.build_network(PARAMS, LAYERS[0], LAYERS[-1])
    for q in net.parameters():
        q.grad = torch.randn_like(q)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    opt.step()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.step()
        best = min(best, (time.perf_counter() - t0) / iters)
    return best * 1e3


def main() -> None:
    torch.set_num_threads(1)
    data_dir = os.environ.get("SEARCHSVC_DATA_DIR") or str(REPO.parent / "shared" / "data")
    t0 = time.perf_counter()
    data = load_dataset("mnist", data_dir=data_dir, download=False, seed=0).without_test()
    load_s = time.perf_counter() - t0
    n_train = len(data.x_train)
    steps = -(-n_train // BATCH)

    # The matmul rate is taken before and after training and the higher one kept, so a
    # slow moment of a shared machine cannot flatter the trainer's share.
    rates_before = gemm_rate(BATCH)
    epochs: list[dict[str, float]] = []

    def report(rep: EpochReport) -> None:
        epochs.append(dict(rep.metrics))

    trainer.fit(PARAMS, data, report, FitOptions(max_epochs=2, seed=0))
    rates_after = gemm_rate(BATCH)
    all_rate = max(rates_before[0], rates_after[0])
    run_rate = max(rates_before[1], rates_after[1])
    adam_ms = adam_step_ms()

    train_s = epochs[-1]["train_time_s"]
    flops = 3 * forward_flops(1) * n_train  # the last, partial batch counted at its size
    achieved = flops / train_s / 1e9
    executed = (flops - 2 * n_train * LAYERS[0] * LAYERS[1]) / train_s / 1e9
    step_ms = train_s / steps * 1e3

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    print(f"MNIST load: {load_s:.2f} s ({n_train} train, {len(data.x_val)} val)")
    print(f"epoch 2 training pass: {train_s:.3f} s, {steps} steps of {BATCH}: "
          f"{n_train / train_s:,.0f} samples/s, {step_ms:.3f} ms/step")  # fmt: skip
    print(f"  whole epoch incl. validation: {epochs[-1]['epoch_time_s']:.3f} s; "
          f"val_accuracy {epochs[-1]['val_accuracy']:.4f}")  # fmt: skip
    print(f"matmul rate (torch.mm, the step's 9 GEMM shapes, best of 7): {all_rate:.1f} GFLOP/s")
    print(f"trainer achieved (3x forward FLOPs): {achieved:.1f} GFLOP/s = "
          f"{100 * achieved / all_rate:.1f}% of the matmul rate")  # fmt: skip
    print(f"trainer achieved counting only the 8 GEMMs it runs (no image grad): "
          f"{executed:.1f} GFLOP/s = {100 * executed / run_rate:.1f}% of their rate "
          f"({run_rate:.1f} GFLOP/s)")  # fmt: skip
    print(f"of each step, the fused Adam update alone takes {adam_ms:.3f} ms "
          f"({100 * adam_ms / step_ms:.0f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
