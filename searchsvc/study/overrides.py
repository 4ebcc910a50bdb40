"""``--set key.path=value``: change any field of a study file before it is validated.

An override is applied to the file's parsed YAML, so the schema checks the result exactly as
if the file said it; a problem it causes is reported against ``--set <path>``, not the file.
Values are read as YAML (``--set budget.n_trials=3`` is the integer 3, ``--set
search_space.lr=0.01`` a constant, ``--set 'sampler={name: random}'`` a mapping).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from searchsvc.errors import StudySpecError

__all__ = ["apply_overrides", "parse_overrides", "override_for"]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["budget.n_trials=3", ...]`` -> ``{"budget.n_trials": 3, ...}`` (values as YAML).

    Raises:
        StudySpecError: an item is not ``key.path=value`` or its value is not YAML.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path or any(not part for part in path.split(".")):
            raise StudySpecError(f"--set {item}: expected key.path=value, e.g. budget.n_trials=3")
        try:
            overrides[path] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise StudySpecError(f"--set {path}: value {text!r} is not YAML: {problem}") from None
    return overrides


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the parsed study file with each ``key.path`` set to its value.

    Missing mappings on the way are created (``--set ensemble.size=5`` on a file without an
    ``ensemble:`` section); a number indexes a list (``objective.0.metric``).

    Raises:
        StudySpecError: the path goes through a value that is neither a mapping nor a list.
    """
    tree: dict[str, Any] = copy.deepcopy(dict(raw))
    for path, value in overrides.items():
        node: Any = tree
        parts = path.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise StudySpecError(
                        f"--set {path}: {'.'.join(parts[:depth]) or 'the file'} is a list of "
                        f"{len(node)}; {part!r} is not an index in it"
                    )
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
                if not last and node.get(key) is None:
                    node[key] = {}
            else:
                raise StudySpecError(
                    f"--set {path}: {'.'.join(parts[:depth])} is {node!r}, not a mapping"
                )
            if last:
                node[key] = value
            else:
                node = node[key]
    return tree


def override_for(key_path: str, overrides: Iterable[str]) -> str | None:
    """The override a problem at ``key_path`` (``"budget -> n_trials"``) comes from, if any.

    A problem belongs to an override when either path contains the other: the override set
    the key at fault, or a key inside the section whose check failed.
    """
    if not key_path:
        return None
    at = key_path.split(" -> ")
    for path in overrides:
        parts = path.split(".")
        common = min(len(at), len(parts))
        if at[:common] == parts[:common]:
            return path
    return None
