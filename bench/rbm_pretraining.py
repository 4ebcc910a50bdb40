"""What greedy RBM pre-training (``init: rbm``) costs and buys a sigmoid network.

Trains the same sigmoid MLP through the real ``MLPTrainer.fit`` once per initialiser
(default: rbm, xavier_normal, xavier_uniform and normal with std 0.01), with plain momentum
SGD so that the starting weights matter, and prints:

- the RBM pre-training time (``rbm_pretrain_time_s``, measured by the trainer apart from
  the epochs) and each layer's final reconstruction error (``rbm_recon_error_i``);
- the seconds per supervised epoch (median over every epoch of every run: the network and
  data are the same whatever the init) as the whole epoch (``epoch_time_s``: training pass
  plus the validation and training-subset evaluations) and as the training pass alone
  (``train_time_s``), and the pre-training's cost in epochs of each;
- the validation accuracy after each supervised epoch, per initialiser.

The defaults are the README's measurement: MNIST, 10,000 training images (the validation
split is the 10,000 images carved from the training set, as the studies do), sigmoid
256-128, momentum SGD (lr 0.1, momentum 0.9, batch 128), RBM defaults (3 CD-1 epochs per
layer at lr 0.05 on up to 10,000 samples), 3 supervised epochs, one thread, seed 0.
``tests/test_rbm.py`` covers the mechanics; this measures.

Run: ``python bench/rbm_pretraining.py`` (data from --data-dir, else $SEARCHSVC_DATA_DIR,
else ../shared/data); ``--dataset digits`` runs in seconds without MNIST.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from searchsvc.data.datasets import load_dataset  # noqa: E402
from searchsvc.trainer import Dataset, EpochReport, FitOptions  # noqa: E402
from trainers.mlp.params import INITS, parse_params  # noqa: E402
from trainers.mlp.training import trainer  # noqa: E402

log = logging.getLogger("bench.rbm_pretraining")

DEFAULT_INITS = ("rbm", "xavier_normal", "xavier_uniform", "normal")


@dataclass
class Run:
    """One initialiser's supervised run: its per-epoch metrics."""

    init: str
    epochs: list[dict[str, float]] = field(default_factory=list)

    def curve(self, key: str) -> list[float]:
        return [m[key] for m in self.epochs]


def network_params(args: argparse.Namespace, init: str) -> dict[str, Any]:
    """The trainer params of one run: everything but ``init`` is shared."""
    widths = [int(w) for w in args.widths.split(",")]
    params: dict[str, Any] = {
        "n_layers": len(widths),
        **{f"width_{i}": w for i, w in enumerate(widths, start=1)},
        "activation": "sigmoid",
        "init": init,
        "init_std": args.init_std,
        "optimizer": "momentum",
        "lr": args.lr,
        "momentum": args.momentum,
        "batch_size": args.batch_size,
        "rbm_epochs": args.rbm_epochs,
        "rbm_lr": args.rbm_lr,
        "rbm_k": args.rbm_k,
        "rbm_samples": args.rbm_samples,
        "patience": 0,  # every run gets all its epochs
        "diagnostics": False,  # not part of the cost being compared
    }
    parse_params(params)  # a bad command line fails before any data is loaded
    return params


def train(data: Dataset, params: dict[str, Any], epochs: int, seed: int) -> Run:
    run = Run(str(params["init"]))

    def report(rep: EpochReport) -> None:
        run.epochs.append(dict(rep.metrics))
        log.info("%s epoch %d: val_accuracy %.4f, %.3f s", run.init, rep.epoch,
                 rep.metrics["val_accuracy"], rep.metrics["epoch_time_s"])  # fmt: skip

    trainer.fit(params, data, report, FitOptions(max_epochs=epochs, seed=seed))
    return run


def load(args: argparse.Namespace) -> Dataset:
    if args.dataset == "digits":
        return load_dataset("digits", seed=args.seed).without_test()
    data_dir = args.data_dir or os.environ.get("SEARCHSVC_DATA_DIR") or REPO.parent / "shared/data"
    return load_dataset(
        args.dataset,
        data_dir=data_dir,
        train_subset=args.train_subset,
        val_size=args.val_size,
        seed=args.seed,
        download=False,
    ).without_test()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "fashion_mnist", "digits"), default="mnist")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default $SEARCHSVC_DATA_DIR)")
    parser.add_argument(
        "--train-subset", type=int, default=10_000, help="training images after the val carve"
    )
    parser.add_argument(
        "--val-size", type=int, default=None, help="validation images (default 10,000 for MNIST)"
    )
    parser.add_argument("--widths", default="256,128", help="hidden widths, comma-separated")
    parser.add_argument("--epochs", type=int, default=3, help="supervised epochs per run")
    parser.add_argument(
        "--inits", default=",".join(DEFAULT_INITS), help="initialisers to compare, comma-separated"
    )
    parser.add_argument("--init-std", type=float, default=0.01, help="std of 'normal'")
    parser.add_argument("--lr", type=float, default=0.1, help="supervised SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rbm-epochs", type=int, default=3)
    parser.add_argument("--rbm-lr", type=float, default=0.05)
    parser.add_argument("--rbm-k", type=int, default=1)
    parser.add_argument("--rbm-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args(argv)
    unknown = [i for i in args.inits.split(",") if i not in INITS]
    if unknown or args.epochs < 1:
        parser.error(f"--inits: unknown {unknown}" if unknown else "--epochs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the figures and return them (for tests)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    torch.set_num_threads(args.threads)
    inits = args.inits.split(",")
    all_params = {init: network_params(args, init) for init in inits}
    t0 = time.perf_counter()
    data = load(args)
    log.info("data loaded in %.2f s", time.perf_counter() - t0)

    runs = [train(data, all_params[init], args.epochs, args.seed) for init in inits]
    epoch_s = statistics.median(t for r in runs for t in r.curve("epoch_time_s"))
    train_s = statistics.median(t for r in runs for t in r.curve("train_time_s"))
    rbm = next((r for r in runs if r.init == "rbm"), None)
    figures: dict[str, Any] = {
        "epoch_s": epoch_s,
        "train_pass_s": train_s,
        "val_accuracy": {r.init: r.curve("val_accuracy") for r in runs},
    }

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {data.name}: "
          f"{len(data.x_train)} train, {len(data.x_val)} val; sigmoid "
          f"{data.n_features}-{args.widths.replace(',', '-')}-{data.n_classes}, momentum SGD "
          f"lr {args.lr}, batch {args.batch_size}, seed {args.seed}")  # fmt: skip
    if rbm is not None:
        first = rbm.epochs[0]
        pretrain_s = first["rbm_pretrain_time_s"]
        errors = [first[f"rbm_recon_error_{i}"] for i in range(1, len(args.widths.split(",")) + 1)]
        figures.update(pretrain_s=pretrain_s, recon_errors=errors)
        print(f"RBM pre-training: {pretrain_s:.2f} s ({args.rbm_epochs} CD-{args.rbm_k} epochs "
              f"per layer, lr {args.rbm_lr}, {min(args.rbm_samples, len(data.x_train))} "
              "samples)")  # fmt: skip
        print("  reconstruction error per layer: "
              + ", ".join(f"{i}: {e:.4f}" for i, e in enumerate(errors, start=1)))  # fmt: skip
    print(f"supervised epoch (median of {sum(len(r.epochs) for r in runs)}): {epoch_s:.3f} s "
          f"whole, {train_s:.3f} s training pass")  # fmt: skip
    if rbm is not None:
        figures.update(ratio_epoch=pretrain_s / epoch_s, ratio_train_pass=pretrain_s / train_s)
        print(f"pre-training = {pretrain_s / epoch_s:.1f} whole epochs = "
              f"{pretrain_s / train_s:.1f} training passes")  # fmt: skip
    header = " ".join(f"{'epoch ' + str(e):>8}" for e in range(1, args.epochs + 1))
    print(f"validation accuracy  {header}")
    for r in runs:
        label = f"normal({args.init_std:g})" if r.init == "normal" else r.init
        print(f"  {label:<18} " + " ".join(f"{a:>8.3f}" for a in r.curve("val_accuracy")))
    return figures


if __name__ == "__main__":
    main()
