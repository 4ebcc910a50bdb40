# The two set-up commands of the README: `make run` (the main job) and `make test` (the tests).
# Each creates .venv and installs the project into it first (skipped when nothing changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= studies/mnist.yaml
SEARCHSVC_DATA_DIR ?= $(abspath ../shared/data)
export SEARCHSVC_DATA_DIR

.PHONY: install run test lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/searchsvc run $(STUDY)

lint: install
	$(BIN)/ruff check searchsvc trainers tests bench
	$(BIN)/ruff format --check searchsvc trainers tests bench

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/trainer_speed.py
