# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACKAGES := budgetnas

TFLITE := $(VENV)/.tflite-stamp

.PHONY: install install-tflite demo test lint typecheck contracts pytest extras clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject: the CPU build on local disk (an unpinned torch pulls CUDA).
	$(BIN)/pip install --quiet -e '.[all,dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

# TFLite conversion extra, pinned and without its heavy transitive deps (see requirements/tflite.txt)
$(TFLITE): $(STAMP) requirements/tflite.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/tflite.txt
	touch $(TFLITE)

install-tflite: $(TFLITE)

demo: $(STAMP)
	$(BIN)/python -m budgetnas.cli.demo

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tools tests bench

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES) tools

# the package table of docs/layout.md against every import (tools/import_contracts.py)
contracts: $(STAMP)
	$(BIN)/python tools/import_contracts.py

pytest: $(STAMP) $(TFLITE)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck contracts pytest

# each torch-free deployable (base, server) installed alone in a fresh virtualenv and run (CI, after test)
extras:
	PYTHON=$(PYTHON) bash tools/check_extras.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
