# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast lint bench deploy-test

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

# Builds the CPU images from deploy/docker, starts `docker-compose.yml --profile cpu`, scores
# through it and tears it down (podman or Docker; scripts/compose-smoke.sh).
deploy-test: setup
	bash scripts/compose-smoke.sh
