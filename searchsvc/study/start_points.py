"""Where a study starts: ``enqueue:`` (params tried first) and ``warm_start:`` (an earlier
study's completed trials added to this one's history), as the study file writes them.

The schema checks here need nothing outside the file: each enqueued entry names searched
params of ``search_space`` with values inside their distributions. The warm start's source
study is read only when the run is prepared (``searchsvc.search.warm_start``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from searchsvc.study.base import Strict
from searchsvc.study.urls import check_storage_url

__all__ = ["WarmStartSpec", "enqueue_problem"]


class WarmStartSpec(Strict):
    """The earlier study whose COMPLETE trials join this study's history."""

    study: str = Field(description="the earlier study's name in its Optuna storage")
    storage: str = Field(description="its Optuna storage URL (any SQLAlchemy URL)")

    @field_validator("storage")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        return check_storage_url(value)


def enqueue_problem(space: Mapping[str, Any], entries: list[dict[str, Any]]) -> str | None:
    """The first problem of the ``enqueue:`` entries against ``space``, as one line
    (``enqueue -> 1 -> lr: 0.5 is outside [0.0001, 0.03]``), or None when all are valid."""
    from searchsvc.study.spec import FixedParam

    for index, entry in enumerate(entries):
        # What a condition sees: the entry's values and the constants of the space.
        known = {k: p.value for k, p in space.items() if isinstance(p, FixedParam)}
        known.update(entry)
        for key, value in entry.items():
            where = f"enqueue -> {index} -> {key}"
            param = space.get(key)
            if param is None:
                close = difflib.get_close_matches(key, list(space), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return f"{where}: not a param of search_space{hint}"
            problem = _value_problem(param, value)
            if problem:
                return f"{where}: {problem}"
            when = param.when
            if when is not None and when.param in known and not when.holds(known):
                return (
                    f"{where}: its condition '{when}' does not hold in this entry "
                    f"({when.param}={known[when.param]!r})"
                )
    return None


def _value_problem(param: Any, value: Any) -> str | None:
    """Why ``value`` is outside ``param``'s distribution, or None."""
    from searchsvc.study.spec import CategoricalParam, FixedParam, FloatParam, IntParam

    match param:
        case FixedParam():
            return f"a constant of search_space ({param.value!r}), not a searched param"
        case CategoricalParam():
            # By type and value, as Optuna compares them: 1 is not True, '1' is not 1.
            if not any(type(c) is type(value) and c == value for c in param.choices) and not (
                _is_number(value) and any(_is_number(c) and c == value for c in param.choices)
            ):
                shown = ", ".join(repr(c) for c in param.choices)
                return f"{value!r} is not one of the choices {shown}"
        case IntParam():
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{value!r} is not an integer"
            return _range_problem(value, param.low, param.high, param.step)
        case FloatParam():
            if not _is_number(value) or not math.isfinite(value):
                return f"{value!r} is not a finite number"
            return _range_problem(value, param.low, param.high, param.step)
    return None


def _range_problem(value: float, low: float, high: float, step: float | None) -> str | None:
    if not low <= value <= high:
        return f"{value!r} is outside [{low}, {high}]"
    if step is not None:
        ratio = (value - low) / step
        if not math.isclose(ratio, round(ratio), abs_tol=1e-8):
            return f"{value!r} is not on the grid of step {step} from {low}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
