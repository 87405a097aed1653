# `make demo` and `make test` set everything up on a fresh machine: one .venv, and a stamp file per
# target so that each installs what it needs once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: test demo bench

# the demo's needs: torch (pinned), the library and the experiments package
$(DEMO_STAMP): pyproject.toml experiments/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e . -e ./experiments
	touch $@

# the tests' needs on top: ruff, pytest, hypothesis, the reference implementations, triton
$(DEV_STAMP): $(DEMO_STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks scripts experiments examples
	$(BIN)/pytest

demo: $(DEMO_STAMP)
	$(BIN)/softtopk demo

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/bench_relaxations.py
	$(BIN)/python benchmarks/bench_losses.py
