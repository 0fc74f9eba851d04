# Arca: `make demo` sets up and runs the demo; `make test` runs the whole test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint typecheck unit integration bench tcb clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/arca demo

lint: setup
	$(VENV)/bin/ruff check src tests bench

typecheck: setup
	$(VENV)/bin/mypy src/arca

test: setup lint typecheck
	$(VENV)/bin/pytest -q tests

unit: setup
	$(VENV)/bin/pytest -q tests/unit

integration: setup
	$(VENV)/bin/pytest -q tests/integration

bench:
	@ARCA_SETUP_BENCH=1 bash scripts/setup.sh
	@for b in bench/*/run.py bench/startup/attested.py; do echo "== $$b"; $(PY) $$b || exit 1; done

tcb:
	@$(PY) scripts/tcb_size.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
