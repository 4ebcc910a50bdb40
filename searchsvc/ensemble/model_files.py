"""What a registered ensemble carries besides its weights: the code that rebuilds and runs its
networks, and pip requirements that exist on PyPI.

The model is logged with MLflow's models-from-code, so nothing is pickled; its ``code/`` folder
holds the ``searchsvc`` package (the predictor and the trainer contract it needs) and each
member's trainer code (the ``trainers`` package for the built-ins, the user's own module or
package otherwise). ``mlflow.pyfunc.load_model`` puts that folder on ``sys.path``, so the model
loads in an environment with only MLflow and torch installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import mlflow
import numpy as np
import pydantic
import torch

from searchsvc.errors import EnsembleError
from searchsvc.registry import BUILTIN_TRAINERS

__all__ = ["MODEL_CODE", "code_paths", "pip_requirements"]

MODEL_CODE = Path(__file__).with_name("model_code.py")
"""The models-from-code script logged as the model (it names ``EnsemblePyfunc``)."""


def _top_level(trainer_ref: str) -> str:
    """The top-level importable name holding ``trainer_ref``'s code (``mlp``: ``trainers``)."""
    ref = BUILTIN_TRAINERS.get(trainer_ref, trainer_ref)
    return ref.partition(":")[0].split(".")[0]


def _source_of(top_level: str) -> str:
    """The folder of package ``top_level`` or the file of module ``top_level``."""
    try:
        spec = importlib.util.find_spec(top_level)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise EnsembleError(
            f"cannot find the code of trainer module {top_level!r} to put in the model"
        )
    if spec.submodule_search_locations:  # a package: carry the whole folder
        return str(Path(spec.origin).parent)
    return str(spec.origin)


def code_paths(trainer_refs: Iterable[str]) -> list[str]:
    """The files and folders the model carries in ``code/``: ``searchsvc`` and the trainers'.

    Raises:
        EnsembleError: a trainer's module cannot be found on ``sys.path``.
    """
    tops = dict.fromkeys(["searchsvc", *(_top_level(ref) for ref in trainer_refs)])
    return [_source_of(top) for top in tops]


def pip_requirements() -> list[str]:
    """Pinned requirements, each a release on PyPI (``searchsvc`` is not: its code is carried).

    A user's trainer module that imports other third-party packages needs them installed
    where the model is served; these pins cover the built-in trainers and the predictor.
    """
    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",  # drop local tags such as +cpu
        f"numpy=={np.__version__}",
        f"pydantic=={pydantic.__version__}",  # the mlp trainer's params
    ]
