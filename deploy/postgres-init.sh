#!/bin/sh
# Runs once, when the postgres volume is first created (docker-entrypoint-initdb.d), as the
# superuser. One role per database, each owning only its own, and nobody else may connect:
# MLflow's server cannot read the Optuna storage, nor the driver MLflow's. The passwords come
# from the environment (.env), read inside psql with \getenv: never on a command line.
set -eu
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"
: "${OPTUNA_DB_PASSWORD:?set OPTUNA_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv optuna_password OPTUNA_DB_PASSWORD
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE optuna LOGIN PASSWORD :'optuna_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE optuna OWNER optuna;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE optuna FROM PUBLIC;
SQL
