"""The models-from-code script of a registered ensemble (``mlflow.pyfunc.log_model``'s
``python_model``): MLflow copies this file into the model and runs it at load time, after
putting the model's own ``code/`` folder (``searchsvc`` and the trainer's code) on ``sys.path``.
"""

import mlflow

from searchsvc.ensemble.pyfunc_model import EnsemblePyfunc

mlflow.models.set_model(EnsemblePyfunc())
