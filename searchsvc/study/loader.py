"""Read a study file into a validated ``StudySpec``, with one clear line per problem.

Nothing here starts Ray or touches MLflow: ``searchsvc validate`` and every other command
call ``load_study`` first, so a bad file stops before anything is created.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from searchsvc.errors import StudySpecError
from searchsvc.study.overrides import apply_overrides, override_for
from searchsvc.study.spec import StudySpec

__all__ = ["Study", "load_study", "check_runtime_names"]


@dataclass(frozen=True)
class Study:
    """A validated study file: the spec, where it came from, its exact text and the
    ``--set`` overrides applied to it (key path -> value)."""

    spec: StudySpec
    path: Path
    text: str
    overrides: Mapping[str, Any] | None = None

    @property
    def search_path(self) -> tuple[str, ...]:
        """Folders a ``module:object`` trainer is imported from (see ``registry``)."""
        from searchsvc.registry import trainer_search_path

        return trainer_search_path(self.path)


def load_study(
    path: str | Path,
    *,
    check_names: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> Study:
    """Read and validate a study file.

    Args:
        path: the YAML file.
        check_names: also resolve the trainer and dataset names and check that the trainer
            reports the objective metric (imports the trainer; off only for schema-only tests).
        overrides: key path -> value (``{"budget.n_trials": 3}``), set in the file's YAML
            before validation (``--set``; see ``searchsvc.study.overrides``).

    Raises:
        StudySpecError: one line per problem, each naming the file (or the ``--set`` at
            fault) and the key path.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise StudySpecError(f"{where}: no such study file")
    if path.is_dir():
        raise StudySpecError(f"{where}: is a folder, not a study file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudySpecError(f"{where}: cannot read: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudySpecError(f"{where}: broken YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise StudySpecError(f"{where}: a study file must be a mapping of keys, but it is {kind}")
    overrides = dict(overrides or {})
    raw = apply_overrides(raw, overrides)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise StudySpecError(_blamed(_error_lines(exc), where, overrides)) from None
    if check_names:
        from searchsvc.registry import trainer_search_path

        problems = check_runtime_names(spec, trainer_search_path(path))
        if problems:
            raise StudySpecError(_blamed(problems, where, overrides))
    return Study(spec=spec, path=path, text=text, overrides=overrides or None)


def _blamed(lines: list[str], where: str, overrides: Mapping[str, Any]) -> list[str]:
    """Each problem line prefixed with its source: the ``--set`` that caused it, else the file.

    A line is ``"<key path>: <message>"`` (the path's parts joined by `` -> ``).
    """
    blamed = []
    for line in lines:
        key_path = line.split(": ", 1)[0] if ": " in line else ""
        culprit = override_for(key_path, overrides)
        blamed.append(f"--set {culprit}: {line}" if culprit else f"{where}: {line}")
    return blamed


def check_runtime_names(spec: StudySpec, search_path: tuple[str, ...] = ()) -> list[str]:
    """Problems with names only known at run time: trainer, dataset, objective metrics.

    ``search_path``: the folders a ``module:object`` trainer is imported from.
    """
    from searchsvc.data.datasets import DATASET_NAMES
    from searchsvc.registry import TrainerNotFound, resolve_trainer

    problems: list[str] = []
    if spec.dataset.name not in DATASET_NAMES:
        problems.append(
            f"dataset -> name: unknown dataset {spec.dataset.name!r}"
            f"{_did_you_mean(spec.dataset.name, DATASET_NAMES)}; "
            f"expected one of: {', '.join(DATASET_NAMES)}"
        )
    try:
        trainer = resolve_trainer(spec.trainer, search_path)
    except TrainerNotFound as exc:
        problems.append(f"trainer: {exc}")
        return problems
    problems += _check_params(spec, trainer)
    if spec.ensemble.refit and not getattr(trainer, "supports_refit", False):
        problems.append(f"ensemble -> refit: trainer {spec.trainer!r} does not support refit "
                        "(it sets no supports_refit = True)")  # fmt: skip
    if (spec.ensemble.refit or spec.ensemble.reseed) and not trainer.has_weights:
        key = "refit" if spec.ensemble.refit else "reseed"
        problems.append(f"ensemble -> {key}: trainer {spec.trainer!r} keeps no weights "
                        "(has_weights = False), so it has nothing to retrain")  # fmt: skip
    allowed = trainer.objective_metrics
    for index, objective in enumerate(spec.objectives):
        if objective.metric not in allowed:
            key = "objective -> metric" if len(spec.objectives) == 1 else f"objective -> {index}"
            problems.append(
                f"{key}: trainer {spec.trainer!r} cannot optimise {objective.metric!r}"
                f"{_did_you_mean(objective.metric, sorted(allowed))}; its objective metrics: "
                f"{', '.join(sorted(allowed))}"
            )
    return problems


def _check_params(spec: StudySpec, trainer: Any) -> list[str]:
    """Ask the trainer (if it can check params) about every key and every categorical choice.

    A typo such as ``lerning_rate`` or ``activation: relu6`` would otherwise fail every trial.
    """
    from searchsvc.study.spec import CategoricalParam, FixedParam, FloatParam, IntParam

    check = trainer.check_params
    base: dict[str, Any] = {}
    for key, param in spec.search_space.items():
        match param:
            case FixedParam():
                base[key] = param.value
            case FloatParam() | IntParam():
                base[key] = param.low
            case CategoricalParam():
                base[key] = param.choices[0]
    try:
        check(base)
    except ValueError as exc:
        return [f"search_space: trainer {spec.trainer!r} rejects it: {exc}"]
    problems = []
    if spec.sampler.name == "grid" and spec.grid_size() <= 5000:
        # A grid runs every combination, so check combinations, not one choice at a time.
        return _check_grid(spec, base, check)
    # Each value a trial may be given, one param at a time: both ends of a range (a trainer's
    # bound is often on the high side: dropout < 1) and every categorical choice.
    variants = [
        (key, {**base, key: value})
        for key, param in spec.search_space.items()
        for value in _values_to_check(param)
    ]
    for key, params in variants:
        try:
            check(params)
        except ValueError as exc:
            problems.append(f"search_space -> {key}: trainer {spec.trainer!r} rejects it: {exc}")
    return problems


def _values_to_check(param: Any) -> list[Any]:
    """The values of ``param`` the base point does not already hold."""
    from searchsvc.study.spec import CategoricalParam, FloatParam, IntParam

    match param:
        case FloatParam() | IntParam():
            high = param.high
            if param.step:  # the highest value on the step's grid, as Optuna samples it
                high = param.low + math.floor((param.high - param.low) / param.step) * param.step
            return [high] if high != param.low else []
        case CategoricalParam():
            return list(param.choices[1:])
    return []


def _check_grid(spec: StudySpec, base: dict[str, Any], check: Any) -> list[str]:
    import itertools

    grid = spec.grid()
    problems = []
    for combination in itertools.product(*grid.values()):
        chosen = dict(zip(grid, combination, strict=True))
        try:
            check({**base, **chosen})
        except ValueError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
            problems.append(f"search_space: grid point ({shown}): trainer {spec.trainer!r} "
                            f"rejects it: {exc}")  # fmt: skip
    return problems


# --------------------------------------------------------------------------- error lines


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = _display_path(loc)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _fields_at(loc[:-1])
            message = f"unknown key {key!r}{_did_you_mean(key, valid)}"
            if valid:
                message += f"; valid keys: {', '.join(sorted(valid))}"
        elif error["type"] == "union_tag_invalid":
            ctx = error.get("ctx", {})
            tag = str(ctx.get("tag", ""))
            expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            field = ctx.get("discriminator", "").strip("'")
            message = (
                f"unknown {field} {tag!r}{_did_you_mean(tag, expected)}; "
                f"expected one of: {', '.join(expected)}"
            )
            path = _display_path(loc)
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _display_path(loc: tuple[Any, ...]) -> str:
    """The key path a user wrote: drop pydantic's union tags and type names."""
    shown = []
    node: Any = StudySpec
    for part in loc:
        node, is_key = _step(node, part)
        if is_key:
            shown.append(str(part))
    return " -> ".join(shown)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    node: Any = StudySpec
    for part in loc:
        node, _ = _step(node, part)
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _step(node: Any, part: Any) -> tuple[Any, bool]:
    """Walk one element of a pydantic error location; say whether it is a user-written key."""
    node = _unwrap(node)
    origin = typing.get_origin(node)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(node):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                tag = _tag_of(member)
                if part in (tag, member.__name__):
                    return member, False
            elif str(part).startswith(str(typing.get_origin(member) or member).split(".")[-1]):
                return member, False
            elif typing.get_origin(member) is list and str(part).startswith("list["):
                return member, False
        return node, False
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return (field.annotation if field else None), True
    if origin is dict:
        return typing.get_args(node)[1], True
    if origin is list:
        return typing.get_args(node)[0], True
    return None, True


def _tag_of(model: type[BaseModel]) -> str | None:
    for key in ("type", "name"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            return typing.get_args(field.annotation)[0]
    return None
