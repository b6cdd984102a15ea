# The two commands a newcomer needs are `make run` and `make test`; each
# creates .venv and installs the project with its dev extra when missing or
# older than pyproject.toml or constraints.txt (the tested versions: `make lock`).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMAGE  ?= lfx-v1-sync-helper:dev

.PHONY: run test check lint format test-coverage bench bench-e2e bench-v2-to-v1 bench-reconcile chaos build docker-build docker-run clean lock

CONSTRAINTS := constraints.txt
LOCK_VENV   := .lock-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# Re-resolve every dependency to the newest release pyproject.toml allows, in a
# throw-away venv, and write the result to constraints.txt. Then `make check`.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

run: $(STAMP)
	$(BIN)/v1-sync-helper dev

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-coverage: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='sync_core/*,bridge/*,tasks/*,operations/*,v1_sync_helper/*,sandbox/*'

bench: $(STAMP)
	$(BIN)/python -m bench.bridge_throughput

bench-reconcile: $(STAMP)
	$(BIN)/python -m bench.reconcile_sweep

# The long, seeded chaos proof (tests/chaos_harness.py): one figure line.
# make chaos SEED=3 KEYS=300 DURATION=90 (the reconciler at its production timing)
SEED     ?= 1
KEYS     ?= 180
DURATION ?= 60
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos_harness --seed $(SEED) --keys $(KEYS) --duration $(DURATION)

build: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -w dist .

docker-build:
	docker build -t $(IMAGE) .

docker-run:
	docker compose up --build

clean:
	rm -rf $(VENV) $(LOCK_VENV) .run build dist *.egg-info

# End to end: bridge + worker against a sequential loop (see bench/e2e.py).
# Quick by default; e.g. `make bench-e2e E2E_ARGS="--count 1500"`.
E2E_ARGS ?=
bench-e2e: $(STAMP)
	$(BIN)/python -m bench.e2e $(E2E_ARGS)

# The V2 -> V1 switch (issue 24): forward committee creates/updates with SYNC_V2_TO_V1
# off against on, alternating, and the reverse worker alone (see bench/v2_to_v1.py).
# E.g. `make bench-v2-to-v1 V2V1_ARGS="--count 300 --runs 3"`.
V2V1_ARGS ?=
bench-v2-to-v1: $(STAMP)
	$(BIN)/python -m bench.v2_to_v1 $(V2V1_ARGS)
