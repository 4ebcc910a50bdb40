# The two set-up commands of the README: `make run` (the main job) and `make test` (the tests).
# Each creates .venv and installs the project into it first (skipped when nothing changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= studies/mnist.yaml
# MNIST beside the checkout (as in CI); elsewhere the product finds or downloads it itself.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
SEARCHSVC_DATA_DIR ?= $(SHARED_DATA)
export SEARCHSVC_DATA_DIR
endif

.PHONY: install system-deps run test lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The report test renders HTML in headless Chromium; the cluster tests use PostgreSQL's
# server binaries (initdb, pg_ctl) and runuser. Debian packages, installed when missing.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "please install:$$missing (apt-get install$$missing)" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	$(BIN)/searchsvc run $(STUDY)

lint: install
	$(BIN)/ruff check searchsvc trainers tests bench
	$(BIN)/ruff format --check searchsvc trainers tests bench

test: install system-deps lint
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: install
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/trainer_speed.py
