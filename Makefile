# `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo bench lint

$(BIN)/softtopk: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: $(BIN)/softtopk
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/pytest

demo: $(BIN)/softtopk
	$(BIN)/softtopk demo

bench: $(BIN)/softtopk
	$(BIN)/python benchmarks/bench_relaxations.py
	$(BIN)/python benchmarks/bench_losses.py
