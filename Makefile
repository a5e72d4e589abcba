# Every target sets itself up: a fresh clone needs only python3 (3.11) and network access to PyPI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint typecheck test test-slow demo clean browser-deps screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check airflow_provider_bfl tests example_dags demo benchmarks
	$(BIN)/ruff format --check airflow_provider_bfl tests example_dags demo benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest's exit code 5 (nothing collected) is not a failure. `make test` stays under 15 minutes;
# `make test-slow` runs the rest of the suite (benchmark smokes, 1,000-image runs, process races),
# and `make reliability` every deployment scenario (CI runs the first two).
test: lint typecheck deployment-services browser-deps
	$(BIN)/pytest -q -m "not slow" || [ $$? -eq 5 ]

test-slow: $(STAMP) deployment-services
	$(BIN)/pytest -q -m slow --durations=20 || [ $$? -eq 5 ]

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py

# Debian's Chromium for tests/browser (driven by Playwright; no browser download), installed only
# when missing.
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# Re-makes the README's screenshots (docs/*.png) from a real api-server and a real pipeline run.
screenshots: $(STAMP) browser-deps
	BFL_SCREENSHOTS_DIR=docs $(BIN)/pytest -q tests/browser

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output

# Runs the deployment scenarios (a real multi-process Airflow against the emulator) RUNS times each
# on each of TOPOLOGIES (the production-shaped scenarios once) and prints/writes the reliability
# figures (tests/deployment/RESULTS.md).
RUNS ?= 3
TOPOLOGIES ?= local,celery
.PHONY: reliability
reliability: $(STAMP) deployment-services
	$(BIN)/python -m tests.deployment.reliability --runs $(RUNS) --topologies $(TOPOLOGIES)

# PostgreSQL and Redis for the production-shaped deployment tests (Debian packages, installed only
# when missing; the tests start throw-away servers of their own on loopback, never the system's).
.PHONY: deployment-services
deployment-services:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql redis-server; \
	fi

# The unit, example-DAG and dag.test() suites on the newest patch of Airflow 3.1, 3.2 and 3.3, one
# virtualenv each under .venv/matrix (writes tests/deployment/MATRIX.md). MATRIX_ARGS="--versions 3.2.2".
MATRIX_ARGS ?=
.PHONY: matrix
matrix: $(STAMP) browser-deps
	$(BIN)/python -m tests.deployment.matrix $(MATRIX_ARGS)

# Runs every benchmark (each against a baseline measured in the same run), prints the ratios and
# writes benchmarks/RESULTS.md. BENCH_ARGS=--quick runs tiny sizes; BENCH_ARGS="--only NAME" one.
BENCH_ARGS ?=
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
