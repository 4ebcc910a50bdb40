"""searchsvc: hyperparameter search for deep networks with Optuna, Ray Tune and MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
