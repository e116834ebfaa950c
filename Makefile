# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv with the pinned versions in requirements/constraints.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# Test files run in parallel, one pytest-xdist worker per core (each with its own emulator, Postgres
# and copy of the migrated Airflow database); PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --dist loadfile
# The fast set spends most of its time in real-time waits (leases, Retry-After, pauses), not CPU:
# four workers on two cores finish it in about 75 s, two in about 100 s.
FAST_WORKERS ?= 4

.PHONY: demo test test-fast test-fleet wheel-smoke bench lint clean chromium

$(VENV)/.installed: pyproject.toml emulator/pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install --python $(PY) --quiet -c requirements/constraints.txt -e ".[postgres,emulator,test,lint]" -e "./emulator[test]"
	touch $@

# The gates first (format, lint, types: seconds), then every test but the fleet (make test-fleet).
test: $(VENV)/.installed chromium lint
	$(PY) -m pytest -q $(XDIST) --durations=15 -m "not fleet"

# Everything but the tests that start real Airflow processes or a browser: the inner loop.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n $(FAST_WORKERS) --dist loadfile -m "not airflow and not browser and not fleet"

# Issue 10's proof on the real distributed engine: Redis, CeleryExecutor, a scheduler, API server,
# DAG processor, triggerer and three Celery workers (one SIGKILLed mid-run), ~3 min on 2 cores.
# FLEET_KEEP_LOGS=1 keeps every process's log in /tmp/fleet-*/logs.
test-fleet: $(VENV)/.installed
	$(PY) -m pytest -q -s -m fleet tests/test_fleet_celery.py

# Debian's Chromium for the UI plugin's browser tests (Playwright drives it; a browser download at
# run time is not reachable). Installs with apt as root (CI, fresh machines); otherwise says the
# browser tests will be skipped.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium is not installed and this is not root: the browser tests will be skipped"

# Build the sdist and wheel, install the wheel into a fresh virtualenv, list the provider and run
# one DAG from it against the emulator (ci/wheel_smoke.sh says what and why).
wheel-smoke: $(VENV)/.installed
	DEV_PY=$(abspath $(PY)) UV=$(abspath $(VENV)/bin/uv) ci/wheel_smoke.sh

demo: $(VENV)/.installed
	$(PY) demo/run_demo.py

# Formatting, lint and type checks; settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/stream_throughput.py

clean:
	rm -rf $(VENV) .airflow-home
