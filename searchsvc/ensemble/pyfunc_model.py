"""The ensemble's MLflow ``PythonModel``: what ``mlflow.pyfunc.load_model`` runs to predict.

It is logged with MLflow's models-from-code (``model_code.py`` beside this module names it), so
the registered model holds this code as files rather than a pickled object, and it imports only
MLflow, numpy, torch and the parts of ``searchsvc`` the model carries with it (see
``searchsvc.ensemble.model_files``): it loads where ``searchsvc`` is not installed.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import numpy as np

from searchsvc.ensemble.members import load_members_dir
from searchsvc.ensemble.predictor import Ensemble
from searchsvc.errors import EnsembleError

__all__ = ["MEMBERS_ARTIFACT", "EnsemblePyfunc"]

logger = logging.getLogger(__name__)

MEMBERS_ARTIFACT = "members"
"""Key of the members directory in the model's artifacts."""


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper around :class:`searchsvc.ensemble.predictor.Ensemble`.

    Holds nothing when logged; ``load_context`` rebuilds the networks from the ``members``
    artifact. The device comes from ``model_config["device"]`` (default ``cpu``) and the
    batch size from ``model_config["batch_size"]`` (default 4096).
    """

    def __init__(self) -> None:
        self._ensemble: Ensemble | None = None
        self._batch_size = 4096

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuilds the member networks from ``context.artifacts["members"]``."""
        config = dict(context.model_config or {})
        members_dir = context.artifacts[MEMBERS_ARTIFACT]
        self._batch_size = int(config.get("batch_size", 4096))
        self._ensemble = load_members_dir(members_dir, device=config.get("device", "cpu"))
        logger.info("loaded %r", self._ensemble)

    @property
    def ensemble(self) -> Ensemble:
        """The loaded ensemble; raises EnsembleError before ``load_context``."""
        if self._ensemble is None:
            raise EnsembleError("EnsemblePyfunc used before load_context()")
        return self._ensemble

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Class probabilities, float32 of shape ``(n, n_classes)``.

        Args:
            context: the MLflow context (unused; the networks were built in load_context).
            model_input: features as a numpy array ``(n, n_features)`` or a pandas DataFrame
                with one column per feature. (The ``np.ndarray`` hint keeps MLflow's
                type-hint validation out of the way; the signature does the checking.)
            params: ignored; accepted for the pyfunc protocol.

        Raises:
            EnsembleError: the input is refused by ``Ensemble.predict_proba`` (not float, the
                wrong shape, not finite, or far outside the training features' range).
        """
        if hasattr(model_input, "to_numpy"):
            model_input = model_input.to_numpy()
        # The same validation as the Python API: MLflow's signature only checks dtype and shape.
        return self.ensemble.predict_proba(model_input, batch_size=self._batch_size)
