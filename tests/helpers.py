"""Helpers the tests share (imported as ``tests.helpers``, never from ``conftest``)."""

from __future__ import annotations

import os
import textwrap
import types
from pathlib import Path
from typing import Any

import searchsvc.trainer as trainer_module

TESTS = Path(__file__).resolve().parent  # the support modules (trainers, hooks) live here
REPO = TESTS.parent
SHARED_DATA = Path(os.environ.get("SEARCHSVC_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def base_study(**overrides: Any) -> dict[str, Any]:
    """A small valid study (noop trainer, synthetic data) with top-level keys replaced."""
    study: dict[str, Any] = {
        "name": "unit-study",
        "trainer": "noop",
        "dataset": "synthetic",
        "objective": {"metric": "val_loss", "mode": "min"},
        "search_space": {
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
            "n_layers": {"type": "int", "low": 1, "high": 3},
            "width_2": {"type": "int", "low": 8, "high": 64, "when": "n_layers >= 2"},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "batch_size": 128,
        },
        "sampler": {"name": "tpe"},
        "scheduler": {"name": "asha"},
        "budget": {"n_trials": 4, "max_epochs": 2},
    }
    study.update(overrides)
    return study


# A trainer module a test writes to disk: it only builds a linear network (for ensembles).
LINEAR_TRAINER_SOURCE = """
from torch import nn

from searchsvc.trainer import BaseTrainer


class Tiny(BaseTrainer):
    name = "tiny"
    objective_metrics = frozenset({"val_loss"})

    def fit(self, *args, **kwargs):
        raise NotImplementedError

    def build_network(self, params, n_features, n_classes):
        return nn.Linear(n_features, n_classes)


tiny = Tiny()
"""

_EXAMPLE_HEADER = "Writing your own trainer"


def docstring_example() -> str:
    """The code of the docstring's literal block that follows "Writing your own trainer"."""
    lines = (trainer_module.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(_EXAMPLE_HEADER))
    assert lines[start].endswith("::"), "the example must be a literal block"
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("    "):
            break  # the first unindented line ends the literal block
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def load_example() -> Any:
    """Execute the example as the module ``mypkg.trainers`` would be; its ``my_trainer``."""
    module = types.ModuleType("mypkg_trainers")
    exec(compile(docstring_example(), "<searchsvc.trainer example>", "exec"), module.__dict__)
    return module.my_trainer


def searchsvc_cli(folder: Path, *arguments: str, timeout: float = 120) -> Any:
    """``python -m searchsvc ARGUMENTS`` in ``folder`` with none of the caller's
    ``MLFLOW_*``/``SEARCHSVC_*`` variables; the ``subprocess.CompletedProcess``."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "searchsvc", *arguments], cwd=folder, env=clean_env(),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def clean_env() -> dict[str, str]:
    """The environment without ``MLFLOW_*``/``SEARCHSVC_*`` (a study's file decides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}


def env_with_test_trainers(**extra: str) -> dict[str, str]:
    """The environment of a driver subprocess that names trainers in ``tests/`` (its Ray
    workers inherit it), warnings off, with ``extra`` variables."""
    import os

    path = f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, **extra}
