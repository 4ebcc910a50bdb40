"""How close a whole MLP training epoch gets to the machine's matmul rate, in one thread.

Trains a 784-512-256-10 ReLU network (batch 128, Adam, no dropout/norm, diagnostics off) on
MNIST (50,000 training samples after the 10,000 validation carve) through the real
``MLPTrainer.fit`` and times its warm epochs as ``fit`` runs them, report to report: the
training pass, the validation pass, the train-accuracy pass (the fixed training subset) and
everything else the epoch does (the training-state copies, RNG capture, the scheduler).

The headline is the strict count: the FLOPs of the GEMMs those passes really execute, over
the whole epoch's time, as a share of the rate ``torch.mm`` reaches on exactly those GEMMs
in the same run. A training step runs 3 forward GEMMs, 3 weight-gradient GEMMs and 2
input-gradient GEMMs (none for the images, which need no gradient); an evaluation pass runs
the 3 forward GEMMs at its own batch size. Each distinct (pass, batch size) is timed with
``torch.mm`` in the operand layouts autograd uses for ``nn.Linear`` (weights stored out x in)
before and after training, best of ``--repeats``; the faster time is kept, so a slow moment
of a shared machine cannot flatter the trainer's share. The fastest warm epoch is reported.

Also printed: the warm epoch's CPU time beside its wall time (less CPU than wall: the
process was preempted, so take the figures again on a quiet machine; the strict count is
given on both), an anatomy of the training step (its GEMMs alone, the trainer's optimiser
step alone, the batch gather alone, and the rest: elementwise work, the loss, autograd and
dispatch, and the GEMMs running slower amid all that than in a loop of their own), and
the per-process import of ``torch._dynamo`` that the first ``torch.optim`` optimiser
triggers (timed apart, so the first epoch's excess over a warm one is what each trial pays).

``--compile`` compiles the network with ``torch.compile`` (``nn.Module.compile``, in place)
inside ``fit``, with a fresh inductor cache unless $TORCHINDUCTOR_CACHE_DIR is set; the
first epoch then carries the compile time, which a search pays once per trial: the "first
epoch" line shows it as the excess over a warm epoch.

Run: ``python bench/trainer_speed.py`` (data from $SEARCHSVC_DATA_DIR, else ../shared/data);
``--samples 2048 --val-samples 1024 --epochs 2 --repeats 1`` is the smoke test's budget.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import trainers.mlp.training as mlp_training  # noqa: E402
from searchsvc.data.datasets import load_dataset  # noqa: E402
from searchsvc.trainer import Dataset, EpochReport, FitOptions  # noqa: E402
from trainers.mlp.epoch import EVAL_BATCH, TRAIN_EVAL_SAMPLES  # noqa: E402

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
PASSES = ("training pass", "validation pass", "train-accuracy pass")
Operands = list[tuple[torch.Tensor, torch.Tensor]]


def step_operands(batch: int, training: bool) -> Operands:
    """The (a, b) of each ``torch.mm(a, b)`` one step at ``batch`` runs, autograd's layouts.

    Forward ``x @ W^T``; in training also the weight gradient ``g^T @ x`` and, except for the
    first layer (the images need no gradient), the input gradient ``g @ W``.
    """
    gemms: Operands = []
    for layer, (fan_in, fan_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:], strict=True)):
        x = torch.randn(batch, fan_in)
        w = torch.randn(fan_out, fan_in)
        gemms.append((x, w.t()))
        if training:
            g = torch.randn(batch, fan_out)
            gemms.append((g.t(), x))
            if layer > 0:
                gemms.append((g, w))
    return gemms


def step_flops(batch: int, training: bool) -> int:
    """FLOPs (2 x multiply-adds) of the GEMMs of :func:`step_operands`, without building them."""
    layers = [a * b for a, b in zip(LAYERS[:-1], LAYERS[1:], strict=True)]
    per_sample = sum(layers) * (2 if training else 1) + (sum(layers[1:]) if training else 0)
    return 2 * batch * per_sample


def gemm_seconds(gemms: Operands, repeats: int, min_s: float = 0.02) -> float:
    """Seconds one run of ``gemms`` takes with ``torch.mm``, best of ``repeats``.

    Each repeat loops enough times to last about ``min_s``, so timer resolution and the
    loop's own cost stay negligible for the small batches too.
    """
    for a, b in gemms:  # warm-up: the BLAS picks its kernels and buffers on first use
        torch.mm(a, b)
    t0 = time.perf_counter()
    for a, b in gemms:
        torch.mm(a, b)
    iters = max(1, int(min_s / max(time.perf_counter() - t0, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            for a, b in gemms:
                torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def batch_counts(n: int, batch: int) -> Counter[int]:
    """How many batches of each size a pass over ``n`` samples in batches of ``batch`` runs."""
    counts: Counter[int] = Counter({batch: n // batch})
    if n % batch:
        counts[n % batch] += 1
    return +counts


GemmTimes = dict[tuple[bool, int], float]  # (training step?, batch) -> best seconds


def measure_gemms(plan: dict[str, PassPlan], best: GemmTimes, repeats: int) -> None:
    """Time every (kind, batch size) the epoch's passes run, keeping the best in ``best``."""
    for key in sorted({(pp.training, b) for pp in plan.values() for b in pp.steps}):
        s = gemm_seconds(step_operands(key[1], key[0]), repeats)
        best[key] = min(s, best.get(key, float("inf")))


@dataclass
class PassPlan:
    """The GEMMs one pass of the epoch runs: batch size -> number of steps."""

    training: bool
    steps: Counter[int]

    @property
    def flops(self) -> int:
        return sum(n * step_flops(b, self.training) for b, n in self.steps.items())

    def seconds(self, best: GemmTimes) -> float:
        """The pass's GEMMs alone at the measured ``torch.mm`` rate."""
        return sum(n * best[self.training, b] for b, n in self.steps.items())


def epoch_plan(n_train: int, n_val: int) -> dict[str, PassPlan]:
    """The GEMMs of one epoch of ``fit`` on the benchmark network, pass by pass."""
    n_fit = min(n_train, TRAIN_EVAL_SAMPLES)
    return {
        PASSES[0]: PassPlan(True, batch_counts(n_train, BATCH)),
        PASSES[1]: PassPlan(False, batch_counts(n_val, EVAL_BATCH)),
        PASSES[2]: PassPlan(False, batch_counts(n_fit, EVAL_BATCH)),
    }


@dataclass
class EpochTimes:
    """Wall-clock seconds of one epoch as ``fit`` ran it, report to report."""

    epoch: int
    total: float
    cpu: float  # the process's CPU time over the same span: well below total when preempted
    passes: dict[str, float]
    metrics: dict[str, float]

    @property
    def rest(self) -> float:
        return self.total - sum(self.passes.values())


def timed_fit(data: Dataset, epochs: int, compile_model: bool) -> list[EpochTimes]:
    """Run ``fit`` and time each epoch and its passes.

    The evaluation passes are timed by wrapping the trainer's ``evaluate`` (validation is
    its first call of an epoch, the train-accuracy subset its second); the training pass is
    the epoch's own ``train_time_s``; an epoch lasts from the previous report's return (the
    start of ``fit`` for the first) to its own report, so the bench's bookkeeping between
    reports is not counted.
    """
    evaluate = mlp_training.evaluate
    build = mlp_training.build_mlp
    eval_s: list[float] = []

    def timed_evaluate(*args: Any) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = evaluate(*args)
        eval_s.append(time.perf_counter() - t0)
        return out

    def compiled_build(*args: Any) -> torch.nn.Module:
        model = build(*args)
        model.compile()  # in place: the state_dict keys stay those of the plain module
        return model

    epochs_seen: list[EpochTimes] = []
    start, cpu_start = time.perf_counter(), time.process_time()

    def report(rep: EpochReport) -> None:
        nonlocal start, cpu_start
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if len(eval_s) != 2:
            raise RuntimeError(f"expected 2 evaluation passes per epoch, timed {len(eval_s)}")
        metrics = dict(rep.metrics)
        passes = dict(zip(PASSES, [metrics["train_time_s"], *eval_s], strict=True))
        epochs_seen.append(EpochTimes(rep.epoch, total, cpu, passes, metrics))
        eval_s.clear()
        start, cpu_start = time.perf_counter(), time.process_time()

    mlp_training.evaluate = timed_evaluate  # type: ignore[assignment]
    if compile_model:
        mlp_training.build_mlp = compiled_build  # type: ignore[assignment]
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        mlp_training.trainer.fit(PARAMS, data, report, FitOptions(max_epochs=epochs, seed=0))
    finally:
        mlp_training.evaluate, mlp_training.build_mlp = evaluate, build  # type: ignore[assignment]
    return epochs_seen


def best_ms(fn: Callable[[], object], repeats: int, iters: int = 50) -> float:
    """Milliseconds per call of ``fn``, best of ``repeats`` loops of ``iters`` calls."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - t0) / iters)
    return best * 1e3


def step_parts_ms(data: Dataset, repeats: int) -> tuple[float, float]:
    """(optimiser update, batch gather) of one training step, each alone, in milliseconds.

    The update is the trainer's own (``step_function`` over ``make_optimizer``'s fused
    Adam) on the benchmark network; the gather is its ``index_select`` of a random batch's
    images and labels from the whole training split.
    """
    from trainers.mlp.optim import make_optimizer, step_function
    from trainers.mlp.params import parse_params

    p = parse_params(PARAMS)
    net = mlp_training.build_mlp(p, LAYERS[0], LAYERS[-1])
    for q in net.parameters():
        q.grad = torch.randn_like(q)
    step = step_function(make_optimizer(net, p, torch.device("cpu")))
    step()  # the first is the real optimizer.step, which creates the state
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    batches = itertools.cycle(torch.randperm(len(x)).split(BATCH))

    def gather() -> None:
        idx = next(batches)
        x.index_select(0, idx), y.index_select(0, idx)

    return best_ms(step, repeats), best_ms(gather, repeats)


def report_lines(
    epochs: list[EpochTimes],
    plan: dict[str, PassPlan],
    best: GemmTimes,
    parts_ms: tuple[float, float],
) -> list[str]:
    """The benchmark's output after the header: every field, one per line."""
    warm = min(epochs[1:], key=lambda e: e.total)
    first = epochs[0]
    train = plan[PASSES[0]]
    n_train = sum(b * n for b, n in train.steps.items())
    steps = sum(train.steps.values())
    flops = sum(pp.flops for pp in plan.values())
    gemm_s = sum(pp.seconds(best) for pp in plan.values())
    rate = flops / gemm_s / 1e9
    achieved = flops / warm.total / 1e9
    step_ms = 1e3 * warm.passes[PASSES[0]] / steps
    gemm_ms = 1e3 * train.seconds(best) / steps
    opt_ms, gather_ms = parts_ms
    times = ", ".join(f"{e.total:.3f}" for e in epochs)
    lines = [
        f"epochs (s, whole, report to report): {times}; fastest warm: epoch {warm.epoch}",
        f"samples/s (whole warm epoch): {n_train / warm.total:,.0f}",
        f"epoch seconds: {warm.total:.3f} (CPU {warm.cpu:.3f}: less means the process was "
        "preempted, a busy machine)",
    ]
    for name in PASSES:
        pp, s = plan[name], warm.passes[name]
        lines.append(
            f"  {name}: {s:.3f} s ({100 * s / warm.total:.1f}%), {sum(pp.steps.values())} "
            f"batches; its GEMMs {1e3 * pp.seconds(best):.0f} ms = "
            f"{100 * pp.seconds(best) / s:.1f}% of it"
        )
    rest_ms = step_ms - gemm_ms - opt_ms - gather_ms
    lines += [
        f"  everything else: {warm.rest:.3f} s ({100 * warm.rest / warm.total:.1f}%)",
        f"training step: {step_ms:.3f} ms = GEMMs {gemm_ms:.3f} (alone) + optimiser "
        f"{opt_ms:.3f} + batch gather {gather_ms:.3f} + the rest {rest_ms:.3f} (elementwise, "
        "loss, autograd and dispatch, the GEMMs' slowdown amid the rest)",
        f"first epoch: {first.total:.3f} s ({first.total - warm.total:+.3f} s over a warm "
        "epoch: setup, warm-up and any compile, paid once per trial)",
        f"val_accuracy after the last epoch: {epochs[-1].metrics['val_accuracy']:.4f}",
        f"GEMM rate (torch.mm on the epoch's GEMMs, same run): {rate:.1f} GFLOP/s",
        f"strict count: {flops / 1e9:.1f} GFLOP per epoch, {achieved:.1f} GFLOP/s = "
        f"{100 * achieved / rate:.1f}% of the GEMM rate ({100 * gemm_s / warm.cpu:.1f}% "
        "on the epoch's CPU time)",
    ]
    return lines


@contextlib.contextmanager
def inductor_cache(fresh: bool) -> Iterator[None]:
    """A fresh, empty inductor cache (its folder in $TORCHINDUCTOR_CACHE_DIR) if ``fresh``.

    Inductor keeps compiled graphs on disk and a second run with the same shapes loads them
    in seconds; trials of a search mostly differ in their shapes, so the cold compile is the
    cost a trial pays and the one measured.
    """
    if not fresh:
        yield
        return
    with (
        tempfile.TemporaryDirectory(prefix="trainer-speed-inductor-") as cache,
        mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}),
    ):
        yield


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="training samples (all)")
    parser.add_argument("--val-samples", type=int, default=None, help="validation (10,000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of fit (>= 2)")
    parser.add_argument("--repeats", type=int, default=5, help="best-of for the timings")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not a warm one")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data_dir = os.environ.get("SEARCHSVC_DATA_DIR") or str(REPO.parent / "shared" / "data")
    t0 = time.perf_counter()
    data = load_dataset(
        "mnist", data_dir=data_dir, download=False, seed=0, train_subset=args.samples,
        val_size=args.val_samples,
    ).without_test()  # fmt: skip
    load_s = time.perf_counter() - t0
    # Asked before torch._dynamo's import, which sets the variable to its default folder.
    fresh_cache = args.compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    # The first torch.optim optimiser of a process imports torch._dynamo (1-2 s): imported
    # here, so that the first epoch's excess is what every trial pays, and shown apart.
    t0 = time.perf_counter()
    importlib.import_module("torch._dynamo")
    dynamo_s = time.perf_counter() - t0
    n_train, n_val = len(data.x_train), len(data.x_val)
    plan = epoch_plan(n_train, n_val)
    best: GemmTimes = {}
    measure_gemms(plan, best, args.repeats)
    with inductor_cache(fresh_cache):
        epochs = timed_fit(data, args.epochs, args.compile)
    measure_gemms(plan, best, args.repeats)
    parts_ms = step_parts_ms(data, args.repeats)
    compiled = "off"
    if args.compile:
        compiled = (
            "on, cold (a fresh inductor cache)" if fresh_cache else "on, $TORCHINDUCTOR_CACHE_DIR"
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, compile {compiled}")  # fmt: skip
    print(f"MNIST load: {load_s:.2f} s ({n_train} train, {n_val} val, "
          f"{min(n_train, TRAIN_EVAL_SAMPLES)} train-accuracy subset)")  # fmt: skip
    print(f"once per process: torch._dynamo import {dynamo_s:.2f} s (the first torch.optim "
          "optimiser imports it)")  # fmt: skip
    for line in report_lines(epochs, plan, best, parts_ms):
        print(line)


if __name__ == "__main__":
    main()
