# Two commands a newcomer needs:  `make dev` runs everything on the embedded default,
# `make test` runs every check and test. Both create .venv and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: chaos dev test lint typecheck imports pytest migrations-check bench bench-quick bench-relay bench-gateway bench-worker bench-shapes bench-claim-rows clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/outbox dev

test: lint typecheck imports pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

# Single head, base -> head -> base -> head, and `alembic check` (also part of `make pytest`).
migrations-check: $(STAMP)
	$(BIN)/pytest tests/migrations

# The whole suite (raw SQL limits, enqueue, relay, worker, peers, scaling) in one run on its own
# embedded servers: one table, and JSON in bench/results/latest.json (--json PATH). The full run
# takes a long while (10M finished rows); `make bench-quick` is about 3 minutes.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.suite --quick $(BENCH_ARGS)

# The relay alone, in more detail. Quick look: BENCH_ARGS="--jobs 20000".
bench-relay: $(STAMP)
	$(BIN)/python bench/relay_bench.py $(BENCH_ARGS)

# HTTP gateway submissions (single and batch) beside the in-process enqueue API; about 90 s.
# Quick look: BENCH_ARGS="--seconds 2 --runs 1".
bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway_bench.py $(BENCH_ARGS)

# The worker beside pgqueuer and procrastinate (the `bench` extra, also part of dev), then
# runs for a few minutes. Quick look: BENCH_ARGS="--jobs 5000 --runs 1".
bench-worker: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/worker_bench.py $(BENCH_ARGS)

# The worker's pipeline shape beside others, each cut down to its statements and a thread pool
# (what the shape alone costs); about 4 minutes. Quick look: BENCH_ARGS="--jobs 10000 --rounds 2".
bench-shapes: $(STAMP)
	$(BIN)/python -m bench.pipeline_shapes $(BENCH_ARGS)

# The claim loop's CPU per job reading the claim's rows, by the types they come back as; seconds.
bench-claim-rows: $(STAMP)
	$(BIN)/python -m bench.claim_rows $(BENCH_ARGS)

# The fault-injection scenarios at full size (the default suite runs them short); each prints
# its checker's summary line and writes a JSON report to $(CHAOS_REPORT_DIR).
CHAOS_REPORT_DIR ?= chaos-reports
chaos: $(STAMP)
	CHAOS_SIZE=full CHAOS_REPORT_DIR=$(CHAOS_REPORT_DIR) $(BIN)/pytest tests/chaos

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
