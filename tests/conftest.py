"""Shared fixtures: the shared data folder and a study-file writer (helpers: tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The genuine MNIST / Fashion-MNIST files beside the checkout (never in the repo)."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found under {SHARED_DATA}; set SEARCHSVC_DATA_DIR")
    return SHARED_DATA


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file into tmp_path: a dict (dumped as YAML) or raw text."""

    def write(content: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write
