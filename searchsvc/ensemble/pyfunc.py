"""The ensemble as an MLflow pyfunc model: logging, registering, the ``champion`` alias.

The logged model is self-contained and holds no pickle: it is logged with MLflow's
models-from-code (``model_code.py``), carries its code as files (``searchsvc`` and the members'
trainer code, see ``searchsvc.ensemble.model_files``) and its ``members`` artifact is a members
directory (see ``searchsvc.ensemble.members``) holding every member's params and state dict.
Loading it needs neither the study's working folder, nor the tracking run's files, nor an
installed ``searchsvc``: only MLflow and torch (its pip requirements)::

    model = mlflow.pyfunc.load_model("models:/mnist-ensemble@champion")
    probs = model.predict(x_scaled)          # float32 (n, n_features) -> (n, n_classes) float32

The signature is a float32 tensor ``(-1, n_features)`` -> float32 ``(-1, n_classes)``.
MLflow enforces it before ``predict``: numpy input must already be float32 (MLflow refuses
float64 rather than casting); a DataFrame with one column per feature is accepted; the REST
API (``{"inputs": [[...], ...]}``) casts JSON numbers itself.

Features must be scaled like the training data (MNIST: pixels / 255 in [0, 1]). ``predict``
applies the checks of ``Ensemble.predict_proba``: integer input is refused, and so is input far
outside the training features' range when the ensemble records it (``feature_range`` in the
members manifest and in the MLmodel metadata). This matters most for the REST API, where JSON
pixels 0-255 arrive as float32 and would otherwise be mispredicted without any error.

Pass ``model_config={"device": "cuda:0"}`` to ``load_model`` to predict on a GPU.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from searchsvc import keys
from searchsvc.ensemble.members import (
    MANIFEST_NAME,
    load_members_dir,
    read_manifest,
    save_members_dir,
)
from searchsvc.ensemble.model_files import MODEL_CODE, code_paths, pip_requirements
from searchsvc.ensemble.predictor import Ensemble
from searchsvc.ensemble.pyfunc_model import MEMBERS_ARTIFACT, EnsemblePyfunc
from searchsvc.errors import EnsembleError

__all__ = [
    "CHAMPION_ALIAS",
    "MEMBERS_ARTIFACT",
    "EnsemblePyfunc",
    "ensemble_signature",
    "log_ensemble",
    "set_champion_if_better",
]

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
"""Model-version tag holding the ensemble's validation log-loss (the champion criterion)."""


def ensemble_signature(n_features: int, n_classes: int) -> ModelSignature:
    """float32 ``(-1, n_features)`` in, float32 ``(-1, n_classes)`` probabilities out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(n_features)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(n_classes)))]),
    )


def log_ensemble(
    source: Ensemble | str | os.PathLike[str],
    *,
    name: str,
    registered_model_name: str,
    input_example: np.ndarray | None = None,
    trainer_ref: str | None = None,
    val_nll: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Logs the ensemble to the active MLflow run and registers a new model version.

    Args:
        source: an in-memory :class:`Ensemble` (then ``trainer_ref`` is required) or a
            members directory written by ``write_members_dir``.
        name: the logged model's name (``mlflow.pyfunc.log_model(name=...)``).
        registered_model_name: registry name; a new version is created under it.
        input_example: a few rows of features, stored with the model (cast to float32).
        trainer_ref: the trainer reference (``mlp`` or ``module:object``) when ``source`` is
            an Ensemble.
        val_nll: the ensemble's validation log-loss, stored as the version tag ``val_nll``.
        metadata: extra entries for the MLmodel ``metadata`` (JSON-serialisable).

    Returns:
        The ModelInfo; ``info.registered_model_version`` is the new version number.

    Raises:
        EnsembleError: no active run, or the ensemble cannot be written or read back.
    """
    if mlflow.active_run() is None:
        raise EnsembleError(
            "log_ensemble needs an active MLflow run; call it inside mlflow.start_run()"
        )
    with tempfile.TemporaryDirectory(prefix="searchsvc-ensemble-") as tmp:
        members_dir = _members_dir_of(source, Path(tmp), trainer_ref)
        manifest = read_manifest(members_dir)
        # Load once here so a broken member fails now, not in the server that loads it later.
        ensemble = load_members_dir(members_dir)
        example = None
        if input_example is not None:
            example = np.ascontiguousarray(
                np.asarray(input_example, dtype=np.float32).reshape(-1, ensemble.n_features)[:5]
            )
        model_metadata = _model_metadata(ensemble, manifest)
        model_metadata.update(metadata or {})
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),  # models-from-code: files, not a pickled object
            code_paths=code_paths(_trainer_refs(manifest)),
            artifacts={MEMBERS_ARTIFACT: str(members_dir)},
            signature=ensemble_signature(ensemble.n_features, ensemble.n_classes),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata=model_metadata,
        )
    version = info.registered_model_version
    client = MlflowClient()
    trials = ",".join(str(m.trial_number) for m in ensemble.members)
    client.set_model_version_tag(registered_model_name, str(version), "trials", trials)
    if val_nll is not None:
        client.set_model_version_tag(
            registered_model_name, str(version), keys.TAG_VAL_NLL, repr(float(val_nll))
        )
    logger.info(
        "logged ensemble %s (%d members) as %s version %s",
        info.model_uri,
        len(ensemble.members),
        registered_model_name,
        version,
    )
    return info


def _trainer_refs(manifest: Mapping[str, Any]) -> list[str]:
    """Every trainer reference a members manifest names (a member's own, else the manifest's)."""
    refs = [m.get("trainer") or manifest.get("trainer") for m in manifest["members"]]
    return list(dict.fromkeys(ref for ref in refs if ref))


def _members_dir_of(
    source: Ensemble | str | os.PathLike[str], tmp: Path, trainer_ref: str | None
) -> Path:
    """The members directory to log: ``source`` itself, or ``source`` saved under ``tmp``."""
    if isinstance(source, Ensemble):
        if not trainer_ref:
            raise EnsembleError("log_ensemble(Ensemble) needs trainer_ref= (e.g. 'mlp')")
        return save_members_dir(source, tmp / MEMBERS_ARTIFACT, trainer_ref=trainer_ref)
    members_dir = Path(source)
    if not (members_dir / MANIFEST_NAME).is_file():
        raise EnsembleError(f"{members_dir} is not a members directory (no {MANIFEST_NAME})")
    return members_dir


def _model_metadata(ensemble: Ensemble, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The MLmodel ``metadata`` describing ``ensemble`` (before the caller's extra entries)."""
    return {
        "searchsvc_ensemble": True,
        "n_features": ensemble.n_features,
        "n_classes": ensemble.n_classes,
        "class_names": list(ensemble.class_names) if ensemble.class_names else None,
        # For people reading the MLmodel file; prediction reads it from the manifest.
        "feature_range": list(ensemble.feature_range) if ensemble.feature_range else None,
        "trainer": manifest.get("trainer"),
        "members": [
            {"trial_number": m.trial_number, "weight": m.weight} for m in ensemble.members
        ],
    }


def _version_val_nll(mv: ModelVersion) -> float | None:
    raw = (mv.tags or {}).get(keys.TAG_VAL_NLL)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def set_champion_if_better(
    client: MlflowClient,
    registered_model_name: str,
    version: int | str,
    val_nll: float,
) -> bool:
    """Points the ``champion`` alias at ``version`` if its validation log-loss is lower.

    Stores ``val_nll`` as the version's ``val_nll`` tag, then moves the alias if there is no
    champion yet, if the champion has no readable ``val_nll`` tag, or if ``val_nll`` is
    strictly lower than the champion's. A non-finite ``val_nll`` never wins.

    Args:
        client: an MlflowClient for the registry.
        registered_model_name: the registered model.
        version: the candidate version.
        val_nll: the candidate's validation log-loss.

    Returns:
        True if the alias now points at ``version`` because of this call.
    """
    version = str(version)
    val_nll = float(val_nll)
    client.set_model_version_tag(registered_model_name, version, keys.TAG_VAL_NLL, repr(val_nll))
    if not math.isfinite(val_nll):
        logger.warning(
            "version %s has non-finite val_nll %r; champion unchanged", version, val_nll
        )
        return False
    try:
        champion = client.get_model_version_by_alias(registered_model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and "alias" not in str(exc).lower():
            raise
        champion = None
    if champion is not None:
        if str(champion.version) == version:
            return False
        champion_nll = _version_val_nll(champion)
        if champion_nll is not None and not val_nll < champion_nll:
            logger.info(
                "%s v%s (val_nll %.6g) does not beat champion v%s (%.6g); alias unchanged",
                registered_model_name,
                version,
                val_nll,
                champion.version,
                champion_nll,
            )
            return False
        if champion_nll is None:
            logger.warning(
                "champion v%s of %s has no %s tag; replacing it",
                champion.version,
                registered_model_name,
                keys.TAG_VAL_NLL,
            )
    client.set_registered_model_alias(registered_model_name, CHAMPION_ALIAS, version)
    logger.info(
        "%s@%s -> v%s (val_nll %.6g)", registered_model_name, CHAMPION_ALIAS, version, val_nll
    )
    return True
