"""Translate the study's search space into Optuna suggestions (define-by-run).

Conditional params are suggested only when their condition holds on the params drawn so far,
so the Optuna trial records exactly the params the network was built with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from searchsvc.study.spec import CategoricalParam, FixedParam, FloatParam, IntParam, ParamSpec

__all__ = ["suggest_params", "trained_params", "to_distribution"]


def suggest_params(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ask ``trial`` for every active param of ``space``, in file order.

    Fixed params are included in the returned dict but are not Optuna params.
    """
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.when is not None and not spec.when.holds(params):
            continue
        match spec:
            case FixedParam():
                params[name] = spec.value
            case FloatParam():
                params[name] = trial.suggest_float(
                    name, spec.low, spec.high, log=spec.log, step=spec.step
                )
            case IntParam():
                params[name] = trial.suggest_int(
                    name, spec.low, spec.high, step=spec.step, log=spec.log
                )
            case CategoricalParam():
                params[name] = trial.suggest_categorical(name, spec.choices)
    return params


def trained_params(
    optuna_params: Mapping[str, Any], space: dict[str, ParamSpec]
) -> dict[str, Any]:
    """The params a trial trained with, from its Optuna params (``FrozenTrial.params``, which
    hold no fixed param): what :func:`suggest_params` gave it, in file order."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.when is not None and not spec.when.holds(params):
            continue
        if isinstance(spec, FixedParam):
            params[name] = spec.value
        elif name in optuna_params:
            params[name] = optuna_params[name]
    return params


def to_distribution(spec: ParamSpec) -> optuna.distributions.BaseDistribution | None:
    """The Optuna distribution of one param (None for a fixed one)."""
    match spec:
        case FloatParam():
            return optuna.distributions.FloatDistribution(
                spec.low, spec.high, log=spec.log, step=spec.step
            )
        case IntParam():
            return optuna.distributions.IntDistribution(
                spec.low, spec.high, log=spec.log, step=spec.step
            )
        case CategoricalParam():
            return optuna.distributions.CategoricalDistribution(spec.choices)
    return None
