"""Find a trainer by name: a built-in (``mlp``, ``noop``) or a user's ``module:object``.

A user's module is imported from the study file's folder or the current folder (in that
order, after what Python already finds), so ``trainer: mycnn:trainer`` works beside the study
file with no ``PYTHONPATH``; the runner hands the same folders to every Ray worker.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from searchsvc.errors import SearchsvcError
from searchsvc.trainer import Trainer

__all__ = ["BUILTIN_TRAINERS", "TrainerNotFound", "resolve_trainer", "trainer_search_path"]

BUILTIN_TRAINERS: dict[str, str] = {
    "mlp": "trainers.mlp:trainer",
    "noop": "trainers.noop:trainer",
}


# Every attribute of the Trainer protocol; BaseTrainer gives the optional ones their defaults.
_TRAINER_ATTRIBUTES = (
    "name", "objective_metrics", "supports_resume", "has_weights", "check_params",
    "build_network", "fit",
)  # fmt: skip


class TrainerNotFound(SearchsvcError, LookupError):
    """The study names a trainer that does not exist or does not have the trainer interface."""


def trainer_search_path(study_file: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """Where a study's own trainer module may live: the study file's folder, then the current
    folder (both absolute, so a Ray worker with another working folder finds them too)."""
    folders = [Path(study_file).resolve().parent] if study_file is not None else []
    folders.append(Path.cwd())
    return tuple(dict.fromkeys(str(f) for f in folders))


def resolve_trainer(ref: str, search_path: Iterable[str] = ()) -> Trainer:
    """The trainer object for a built-in name or a ``module:object`` reference.

    Args:
        ref: ``mlp``, ``noop`` or ``module:object``.
        search_path: folders to import a user's module from, after ``sys.path`` (see
            :func:`trainer_search_path`). They stay on ``sys.path``: the module may import
            its neighbours later.
    """
    for folder in search_path:
        if folder not in sys.path:
            sys.path.append(folder)
    if ":" not in ref:
        if ref not in BUILTIN_TRAINERS:
            close = difflib.get_close_matches(ref, list(BUILTIN_TRAINERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TrainerNotFound(
                f"unknown trainer {ref!r}{hint}; expected one of: {', '.join(BUILTIN_TRAINERS)}, "
                "or 'module:object' for your own"
            )
        ref = BUILTIN_TRAINERS[ref]
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainerNotFound(f"cannot import trainer module {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise TrainerNotFound(f"module {module_name!r} has no object {attr!r}") from None
    if isinstance(obj, type):
        obj = obj()
    missing = [m for m in _TRAINER_ATTRIBUTES if not hasattr(obj, m)]
    if missing:
        raise TrainerNotFound(
            f"{ref!r} is not a trainer: it lacks {', '.join(missing)} (subclass "
            "searchsvc.trainer.BaseTrainer for the defaults; see searchsvc.trainer)"
        )
    return obj  # type: ignore[return-value]
