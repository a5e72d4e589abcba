# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and network access to PyPI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint typecheck test demo clean browser-deps screenshots

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

test: lint typecheck browser-deps
	$(BIN)/pytest -q

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
# and prints/writes the reliability figures (tests/deployment/RESULTS.md).
RUNS ?= 3
.PHONY: reliability
reliability: $(STAMP)
	$(BIN)/python -m tests.deployment.reliability --runs $(RUNS)

# Runs every benchmark (each against a baseline measured in the same run), prints the ratios and
# writes benchmarks/RESULTS.md. BENCH_ARGS=--quick runs tiny sizes; BENCH_ARGS="--only NAME" one.
BENCH_ARGS ?=
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
