"""The data sets a study trains on (MNIST, Fashion-MNIST, digits, ``.npz``, synthetic), loaded
once by the driver. Imports no Ray, Optuna or MLflow."""
