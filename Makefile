# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACKAGES := budgetnas

TFLITE := $(VENV)/.tflite-stamp
OFA_REF := $(VENV)/ofa-ref

.PHONY: install install-tflite install-ofa-ref demo test lint typecheck contracts pytest extras clean

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

# Once-for-All's code, only as the reference of the OFA checkpoint test: outside site-packages,
# without its deps (see requirements/ofa-ref.txt)
$(OFA_REF)/.stamp: $(STAMP) requirements/ofa-ref.txt
	rm -rf $(OFA_REF)
	$(BIN)/pip install --quiet --no-deps --target $(OFA_REF) -r requirements/ofa-ref.txt
	touch $(OFA_REF)/.stamp

install-ofa-ref: $(OFA_REF)/.stamp

demo: $(STAMP)
	$(BIN)/python -m budgetnas.cli.demo

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tools tests bench

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES) tools

# the package table of docs/layout.md against every import (tools/import_contracts.py)
contracts: $(STAMP)
	$(BIN)/python tools/import_contracts.py

pytest: $(STAMP) $(TFLITE) $(OFA_REF)/.stamp
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck contracts pytest

# each torch-free deployable (base, server) installed alone in a fresh virtualenv and run (CI, after test)
extras:
	PYTHON=$(PYTHON) bash tools/check_extras.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
