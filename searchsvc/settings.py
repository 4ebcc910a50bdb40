"""Every environment variable searchsvc honours: its name, default and meaning, in one place.

Values are read once, when a command builds its ``StudyRun`` (``Settings.from_env()``), and
handed on from there; nothing reads the environment at import. Command-line options and the
study file beat these variables (see ``searchsvc.study.locations``). The README's table of
variables is checked against :data:`VARIABLES` by a test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from searchsvc.errors import StudySpecError

__all__ = ["VARIABLES", "Settings", "Variable"]


class Variable(NamedTuple):
    """One environment variable: its name, its default when unset, and what it sets."""

    name: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "SEARCHSVC_WORKDIR", "`runs/<study name>`",
        "the study's folder, after `--workdir` and the file's `workdir:`",
    ),
    Variable(
        "SEARCHSVC_STORAGE", "`sqlite:///<workdir>/optuna.db`",
        "the Optuna storage URL, after `--storage` and the file's `storage:`",
    ),
    Variable(
        "MLFLOW_TRACKING_URI", "`sqlite:///<workdir>/mlflow.db`",
        "the MLflow tracking URI, after `--tracking-uri` and the file's `tracking_uri:`",
    ),
    Variable(
        "SEARCHSVC_DATA_DIR", "unset",
        "where data set files are looked up, after `--data-dir` and `dataset.data_dir`, "
        "before the download cache",
    ),
    Variable(
        "XDG_CACHE_HOME", "`~/.cache`",
        "the download cache's parent: data sets download to `$XDG_CACHE_HOME/searchsvc/data`",
    ),
    Variable(
        "RAY_ADDRESS", "unset (a local Ray of this machine's cores)",
        "the Ray cluster to join, after `--address`",
    ),
    Variable(
        "SEARCHSVC_MLFLOW_WAIT_S", "`300`",
        "seconds the end of a run waits for an unreachable MLflow server to take the "
        "deferred writes; past it the writes stay journaled in `<workdir>/mlflow-journal/`, "
        "the study still ends (report from what is stored), and `searchsvc sync` (or the "
        "next run) writes them",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """The values of :data:`VARIABLES` for one command (None: unset)."""

    workdir: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    data_dir: str | None = None
    cache_home: str | None = None
    ray_address: str | None = None
    mlflow_wait_s: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the variables now (``environ`` defaults to the process environment).

        Raises:
            StudySpecError: ``SEARCHSVC_MLFLOW_WAIT_S`` is not a number of seconds >= 0.
        """
        env = os.environ if environ is None else environ
        wait = env.get("SEARCHSVC_MLFLOW_WAIT_S") or "300"
        try:
            wait_s = float(wait)
        except ValueError:
            wait_s = -1.0
        if not wait_s >= 0:
            raise StudySpecError(
                f"SEARCHSVC_MLFLOW_WAIT_S: expected a number of seconds >= 0, got {wait!r}"
            )
        return cls(
            workdir=env.get("SEARCHSVC_WORKDIR") or None,
            storage=env.get("SEARCHSVC_STORAGE") or None,
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            data_dir=env.get("SEARCHSVC_DATA_DIR") or None,
            cache_home=env.get("XDG_CACHE_HOME") or None,
            ray_address=env.get("RAY_ADDRESS") or None,
            mlflow_wait_s=wait_s,
        )

    @property
    def cache_dir(self) -> Path:
        """Where downloaded data sets are kept: ``$XDG_CACHE_HOME/searchsvc/data``."""
        base = self.cache_home or str(Path.home() / ".cache")
        return Path(base).expanduser() / "searchsvc" / "data"
