"""searchsvc: hyperparameter search for deep networks with Optuna, Ray Tune and MLflow.

``from searchsvc import load_ensemble`` is the Python API for a finished study's ensemble.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_ensemble", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily so the CLI starts without torch and MLflow.
    if name == "load_ensemble":
        from searchsvc.api import load_ensemble

        return load_ensemble
    raise AttributeError(f"module 'searchsvc' has no attribute {name!r}")
