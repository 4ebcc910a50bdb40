"""The Python API: load a study's ensemble and predict with it."""

from __future__ import annotations

import os
from pathlib import Path

from searchsvc.ensemble import Ensemble, load_members_dir
from searchsvc.errors import EnsembleError

__all__ = ["load_ensemble"]


def load_ensemble(
    source: str | os.PathLike[str],
    *,
    device: str = "cpu",
    tracking_uri: str | None = None,
) -> Ensemble:
    """The ensemble of a study (its registered ``champion``) or of an MLflow model URI.

    Args:
        source: a study file (``studies/mnist.yaml``) or a model URI such as
            ``models:/mnist-mlp@champion``, ``models:/mnist-mlp/3`` or ``runs:/<id>/ensemble``.
        device: where the member networks run (``cpu``, ``cuda:0``).
        tracking_uri: the MLflow tracking URI for a model URI (default: the study's, or
            ``MLFLOW_TRACKING_URI``).

    Example::

        ens = load_ensemble("studies/mnist.yaml")
        probs = ens.predict_proba(x)        # (n, classes)
        labels = ens.predict(x)
        ens.members                         # trials and weights
    """
    import mlflow

    text = os.fspath(source)
    if text.startswith(("models:/", "runs:/")):
        uri = text
    else:
        from searchsvc.loader import load_study
        from searchsvc.paths import resolve_paths

        spec = load_study(Path(text), check_names=False).spec
        tracking_uri = tracking_uri or resolve_paths(spec).tracking_uri
        uri = f"models:/{spec.name}@champion"
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_artifact_uri(uri, tracking_uri), tracking_uri=tracking_uri
        )
    except Exception as exc:  # MLflow raises several types; one line naming the URI is enough
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnsembleError(f"cannot load ensemble {uri} from {tracking_uri}: {first}") from None
    members = Path(local) / "artifacts" / "members"
    if not members.is_dir():
        raise EnsembleError(f"{uri} is not a searchsvc ensemble (no artifacts/members)")
    return load_members_dir(members, device=device)


def _artifact_uri(uri: str, tracking_uri: str) -> str:
    """Resolve a registry URI (name@alias, name/version) with this tracking URI's registry.

    ``mlflow.artifacts.download_artifacts`` would consult the process-wide registry URI
    instead, so a study's embedded store could not be read without changing global state.
    """
    from mlflow.tracking import MlflowClient

    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = rest.partition("/")
    return client.get_model_version_download_uri(name, version)
