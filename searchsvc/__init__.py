"""searchsvc: hyperparameter search for deep networks with Optuna, Ray Tune and MLflow.

The Python API, as complete as the CLI (each name is imported lazily, so the CLI starts
without torch and MLflow)::

    import searchsvc
    result = searchsvc.run("studies/mnist.yaml", overrides={"budget.n_trials": 3})
    study = searchsvc.load_study("studies/mnist.yaml")       # the validated study file
    table = searchsvc.trials("studies/mnist.yaml")           # pandas.DataFrame, one row a trial
    params = searchsvc.best_params("studies/mnist.yaml")     # dict of the best trial's params
    ens = searchsvc.load_ensemble("studies/mnist.yaml")      # the registered ensemble
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["best_params", "load_ensemble", "load_study", "run", "trials", "__version__"]

_HOMES = {
    "load_ensemble": "searchsvc.api",
    "run": "searchsvc.api",
    "trials": "searchsvc.api",
    "best_params": "searchsvc.api",
    "load_study": "searchsvc.study.loader",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'searchsvc' has no attribute {name!r}")
