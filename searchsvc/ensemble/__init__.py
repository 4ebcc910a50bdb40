"""Ensembles of a study's best trials: member selection (``selection``), the predictor
(``predictor``) and its on-disk members format (``members``), the metrics, the build of a
finished study's ensemble (``build``) and its MLflow model (``pyfunc``). ``selection``,
``predictor`` and ``members`` import no Ray, Optuna or MLflow."""
