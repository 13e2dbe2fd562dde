# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m rlmec demo

test: setup
	$(PY) -m pytest -m "not gpu" -q

test-fast: setup
	$(PY) -m pytest -m "not gpu and not slow" -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m benchmarks.run
