# swarmupdate: `make demo` runs a local swarm, `make test` runs every test tier.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OPS_STAMP := $(VENV)/.installed-ops

.PHONY: demo test lint typecheck unit venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# ansible-core and ansible-lint (the ops extra) for the tests that check ansible/; libtorrent and
# matplotlib (the bench extra) for the benchmark and its smoke test
$(OPS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,ops,bench]'
	touch $(OPS_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/swarmupdate demo

lint: $(STAMP)
	$(BIN)/ruff check swarmupdate tests bench chaos
	$(BIN)/ruff format --check swarmupdate tests bench chaos

typecheck: $(STAMP)
	$(BIN)/mypy swarmupdate

test: $(OPS_STAMP)
	bash scripts/install-test-deps.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest -q

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# as root: the fleet benchmark builds network namespaces (about half an hour), then the publisher's
bench: $(OPS_STAMP)
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/publish.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
