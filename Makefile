# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: demo test lint bench clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(READY)

demo: $(READY)
	$(BIN)/crdtkv demo

test: $(READY)
	$(BIN)/python -m pytest -q

lint: $(READY)
	$(BIN)/ruff check crdtkv transports tests bench examples
	$(BIN)/ruff format --check crdtkv transports tests bench examples
	$(BIN)/mypy

bench: $(READY)
	$(BIN)/python bench/local_ops.py
	$(BIN)/python bench/replication.py
	$(BIN)/python bench/durability.py

clean:
	rm -rf $(VENV) build *.egg-info
