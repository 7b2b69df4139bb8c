# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CI has two cores; more threads than cores only makes torch slower.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $@

## demo: set up, then train a DCGAN on MNIST for ten epochs and evaluate it
demo: $(VENV)/.installed
	$(BIN)/python -m training dcgan --out runs/demo --epochs 10
	@echo "samples: runs/demo/samples/  report: runs/demo/report.json"

## test: set up, lint, then run the whole test suite
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
