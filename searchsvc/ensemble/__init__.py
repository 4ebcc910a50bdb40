"""Ensembles of a study's best trials: the predictor and its on-disk members format
(``predictor``), the metrics, the build of a finished study's ensemble (``build``) and its
MLflow model (``pyfunc``). The predictor imports no Ray, Optuna or MLflow."""
