"""``when:`` conditions of the search space: parsing, evaluation, and the check that a
condition can be evaluated on every value its parent param may take (before any trial runs,
so that a string choice compared with ``>= 2`` is a study-file error, not a crash mid-run)."""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml

from searchsvc.study.base import Strict as _Strict

__all__ = ["Condition", "condition_problem"]

_CONDITION = re.compile(r"^\s*([A-Za-z_]\w*)\s*(==|!=|>=|<=|>|<|\bin\b|\bnot in\b)\s*(.+?)\s*$")


class Condition(_Strict):
    """``when: "n_layers >= 2"``: the parameter exists only when this holds."""

    param: str
    op: Literal["==", "!=", ">=", "<=", ">", "<", "in", "not in"]
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _CONDITION.match(text)
        if not match:
            raise ValueError(
                f"condition {text!r} is not of the form '<param> <op> <value>' "
                "with op one of == != >= <= > < in, e.g. 'n_layers >= 2'"
            )
        name, op, raw = match.groups()
        value = yaml.safe_load(raw)
        if op in ("in", "not in") and not isinstance(value, list):
            raise ValueError(f"condition {text!r}: 'in' needs a list, e.g. [adam, adamw]")
        return cls(param=name, op=op, value=value)

    def holds(self, params: dict[str, Any]) -> bool:
        """True when the parent param is present and satisfies the condition."""
        if self.param not in params:
            return False
        actual = params[self.param]
        match self.op:
            case "==":
                return actual == self.value
            case "!=":
                return actual != self.value
            case ">=":
                return actual >= self.value
            case "<=":
                return actual <= self.value
            case ">":
                return actual > self.value
            case "<":
                return actual < self.value
            case "in":
                return actual in self.value
            case _:
                return actual not in self.value

    def __str__(self) -> str:
        return f"{self.param} {self.op} {self.value!r}"


def condition_problem(condition: Condition, domain: tuple[list[Any], bool]) -> str | None:
    """Why ``condition`` cannot work on its parent's values, or None.

    ``domain``: values the parent may take, and whether they are all of them (choices, a
    constant, a small integer range) or only samples (a float range's ends).
    """
    values, complete = domain
    holds = []
    for value in values:
        try:
            holds.append(condition.holds({condition.param: value}))
        except TypeError as exc:
            shown = ", ".join(repr(v) for v in values[:6])
            return (
                f"condition '{condition}' cannot be evaluated on {condition.param!r}, whose "
                f"values are {shown}{', ...' if len(values) > 6 else ''}: {exc}"
            )
    if complete and not any(holds):
        return (
            f"condition '{condition}' never holds: {condition.param!r} takes only "
            f"{', '.join(repr(v) for v in values[:6])}{', ...' if len(values) > 6 else ''}"
        )
    return None
