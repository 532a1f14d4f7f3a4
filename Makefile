# The two commands a new user needs; each sets everything up on a fresh machine.
#   make run    set up, then run the main job
#   make test   set up, then lint, type-check and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints.txt

.PHONY: setup run test lint typecheck pytest bench-speed clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/bench list
	$(BIN)/bench cache

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench-speed: setup
	$(BIN)/python benchmarks/attention_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
