-- A second database for the Optuna storage, beside MLflow's, on the same server.
CREATE DATABASE optuna;
