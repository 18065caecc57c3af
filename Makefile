# swarmupdate: `make demo` runs a local swarm, `make test` runs every test tier.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OPS_STAMP := $(VENV)/.installed-ops

.PHONY: demo test lint typecheck unit venv bench fuzz chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# ansible-core and ansible-lint (the ops extra) for the tests that check ansible/; libtorrent and
# matplotlib (the bench extra) for the benchmark and its smoke test; atheris (the fuzz extra) for fuzz/
$(OPS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,ops,bench,fuzz]'
	touch $(OPS_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/swarmupdate demo

lint: $(STAMP)
	$(BIN)/ruff check swarmupdate tests bench chaos fuzz
	$(BIN)/ruff format --check swarmupdate tests bench chaos fuzz

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

# the coverage-guided fuzzers (fuzz/, atheris): a minute per harness, one after another; fails on a crash
fuzz: $(OPS_STAMP)
	$(BIN)/python fuzz/run.py --seconds 60 --out bench/results/fuzz-$$(date -u +%Y%m%dT%H%M%SZ).json

# as root: the reliability scenarios at full size on the namespace testbed (docs/reliability.md);
# results in chaos/results/
chaos: $(OPS_STAMP)
	$(BIN)/python chaos/load.py --connections 1000
	$(BIN)/python chaos/load.py --connections 4000
	$(BIN)/python chaos/tracker_load.py --announces 10000 --swarms 1000
	$(BIN)/python chaos/tracker_load.py --announces 100000 --swarms 10000 --concurrency 500
	$(BIN)/python chaos/hostile.py
	$(BIN)/python chaos/churn.py
	$(BIN)/python chaos/crash.py --points 300 --out chaos/results/crash-$$(date -u +%Y%m%dT%H%M%SZ).json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
