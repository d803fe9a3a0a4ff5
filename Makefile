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

# Every Python tree is linted, formatted and type-checked (mypy strict; its `files` in pyproject.toml).
LINTED := crdtkv transports tests bench examples

lint: $(READY)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# Every benchmark case, full size (minutes; rate-limit starts a redis-server if one is installed).
# BENCH_ARGS=--quick runs each as a smoke run in seconds, as CI does; name cases to run only those
# (BENCH_ARGS="--repeats 9 rate-limit"; `bench/run.py --list` lists them).
bench: $(READY)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
