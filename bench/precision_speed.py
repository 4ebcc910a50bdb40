"""The MLP trainer's epoch in float32 and bfloat16, and without the denormal flush.

Trains the network of ``studies/mnist_99.yaml`` (784-1024-1024-10 ReLU, input dropout 0.2,
dropout 0.5, max-norm 3, Adam 1.5e-3, batch 128, diagnostics off) on MNIST (55,000 training
images after a 5,000-image validation carve) through the real ``MLPTrainer.fit``, in one
thread, and reads each epoch's ``epoch_time_s`` (the whole epoch as ``fit`` reports it: the
training pass and both evaluations). Three arms, each a fresh ``fit`` from the same seed, one
after another in this process:

- ``float32``: the trainer's default;
- ``bfloat16``: ``precision: bfloat16``;
- ``float32, no flush``: the default with ``torch.set_flush_denormal`` made a no-op in this
  process, so denormal floats are computed as before the trainer flushed them.

Printed per arm: the median, minimum and maximum epoch time over epochs 2..N (the first
carries one-off costs), the last epoch's time (denormals build up over epochs, so the slowdown
they cause shows at the end), the training images per second of a median epoch and the last
epoch's validation accuracy. Then bfloat16's median over float32's. It measures one network
at a time; a study's two concurrent trials share the memory bandwidth and run slower.

Usage: python bench/precision_speed.py [--epochs 8] [--samples N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from searchsvc.data.datasets import load_dataset  # noqa: E402
from searchsvc.trainer import Dataset, EpochReport, FitOptions  # noqa: E402
from trainers.mlp.training import trainer  # noqa: E402

NETWORK = {
    "n_layers": 2, "width": 1024, "activation": "relu", "input_dropout": 0.2, "dropout": 0.5,
    "max_norm": 3.0, "optimizer": "adam", "lr": 1.5e-3, "batch_size": 128, "patience": 0,
    "diagnostics": False,
}  # fmt: skip
ARMS = (("float32", "float32", True), ("bfloat16", "bfloat16", True),
        ("float32, no flush", "float32", False))  # fmt: skip


def fit_arm(data: Dataset, precision: str, flush: bool, epochs: int) -> list[EpochReport]:
    """One fresh fit of the network; its reports."""
    reports: list[EpochReport] = []
    params = {**NETWORK, "precision": precision}
    no_flush = mock.patch.object(torch, "set_flush_denormal", return_value=False)
    with contextlib.nullcontext() if flush else no_flush:
        trainer.fit(params, data, reports.append, FitOptions(max_epochs=epochs, seed=0))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=None, help="training images (all)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not counted)")
    torch.set_num_threads(1)
    data = load_dataset(
        "mnist", data_dir=args.data_dir, val_size=5000, train_subset=args.samples, seed=0
    )
    n = len(data.x_train)
    print(f"network: 784-1024-1024-10 ReLU, dropout 0.2 / 0.5, max-norm 3, Adam, batch 128; "
          f"{n} training images, one thread, {args.epochs} epochs per arm")  # fmt: skip
    medians: dict[str, float] = {}
    for label, precision, flush in ARMS:
        reports = fit_arm(data, precision, flush, args.epochs)
        times = [r.metrics["epoch_time_s"] for r in reports[1:]]
        median = statistics.median(times)
        medians[label] = median
        print(f"{label}: epochs 2-{args.epochs} median {median:.2f} s (min {min(times):.2f}, "
              f"max {max(times):.2f}), last {times[-1]:.2f} s; "
              f"{n / median:.0f} training images/s; "
              f"validation accuracy {reports[-1].metrics['val_accuracy']:.4f}")  # fmt: skip
    ratio = medians["bfloat16"] / medians["float32"]
    print(f"bfloat16 / float32, median epoch: {ratio:.2f}x")


if __name__ == "__main__":
    main()
