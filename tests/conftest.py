"""Shared fixtures: the shared data folder and a study-file writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEARCHSVC_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The genuine MNIST / Fashion-MNIST files beside the checkout (never in the repo)."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found under {SHARED_DATA}; set SEARCHSVC_DATA_DIR")
    return SHARED_DATA


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


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file into tmp_path: a dict (dumped as YAML) or raw text."""

    def write(content: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write


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
