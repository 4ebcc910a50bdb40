"""Ensembles of a study's best trials: the candidates (``candidates``, one per configuration
cluster with ``diversity``, reseeds of the best configurations with ``reseeds``), member
selection (``selection``), the refit of the chosen members (``refit``), the predictor
(``predictor``) and its on-disk members format (``members``), the metrics, the build of a
finished study's ensemble (``build``) and its MLflow model (``pyfunc``). ``selection``,
``diversity``, ``predictor`` and ``members`` import no Ray, Optuna or MLflow; reseeds and refits
run on Ray through ``searchsvc.execution.retrain``."""
