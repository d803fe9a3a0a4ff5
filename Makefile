# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

COMPILED := $(VENV)/.compiled

.PHONY: demo test lint bench clean compiled pure

# The venv holds an editable install of the pure-Python build (quick: no compiler run), which
# is what `make demo` uses on a fresh clone. `make compiled` builds the compiled modules in
# place (setup.py: mypyc, under a minute); from then on the same venv loads them, unless
# CRDTKV_PURE=1. `crdtkv --version` names the build loaded.
$(READY): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CRDTKV_PURE=1 $(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(COMPILED)
	touch $(READY)

# Rebuilt whenever a module of the package changes, so no stale compiled module runs old code
# (tests/test_build.py fails on one).
$(COMPILED): $(READY) setup.py $(wildcard crdtkv/*.py crdtkv/*/*.py)
	find crdtkv -name '*.so' -delete  # none left over from a longer list of compiled modules
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -c 'import crdtkv, sys; sys.exit(crdtkv.BUILD != "compiled")' || \
		{ echo "make: the compiled build did not load (no C compiler or Python headers?)" >&2; exit 1; }
	touch $(COMPILED)

compiled: $(COMPILED)

# Back to the pure-Python build in the venv: the compiled modules leave the tree.
pure:
	find crdtkv -name '*.so' -delete
	rm -f $(COMPILED)

demo: $(READY)
	$(BIN)/crdtkv demo

# The whole suite against both builds: the compiled one, then pure Python (CRDTKV_PURE=1).
# CRDTKV_EXPECT_BUILD makes tests/test_build.py fail if the build loaded is not that one.
test: $(COMPILED)
	CRDTKV_EXPECT_BUILD=compiled $(BIN)/python -m pytest -q
	CRDTKV_PURE=1 CRDTKV_EXPECT_BUILD=pure $(BIN)/python -m pytest -q

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
	rm -rf $(VENV) build dist *.egg-info
	find crdtkv -name '*.so' -delete
