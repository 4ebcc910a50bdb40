"""The README's Python API example, executed as it stands on ``studies/quickstart.yaml``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", readme, re.S)
    assert found, "README.md lost its Python API example"
    return found.group(1)


def test_readme_python_api_example_runs(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    shutil.copy(REPO / "studies" / "quickstart.yaml", tmp_path / "studies")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SEARCHSVC_"))}
    env["PYTHONPATH"] = str(REPO)

    done = subprocess.run(
        [sys.executable, "-c", _readme_example()], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("3 ")  # 3 finished trials (the override)
    assert (tmp_path / "runs" / "quickstart" / "optuna.db").is_file()
