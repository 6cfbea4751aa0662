# One task runner: `make run` and `make test` build their own virtual environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,redis]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/kairos demo --if-empty
	$(BIN)/kairos serve

# The /docs browser test needs Debian's chromium; it skips without it (and fails in CI).
test: $(STAMP)
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null 2>&1 || { \
		echo "make test: installing Debian's chromium for the /docs browser test"; \
		(apt-get install -y chromium || (apt-get update && apt-get install -y chromium)) >/dev/null 2>&1 \
		|| echo "make test: could not install chromium; the browser test will skip"; }
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { echo "make bench needs wrk (Debian package): installing it"; \
		(apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) kairos.db kairos.db-wal kairos.db-shm kairos-state.db kairos-state.db-wal kairos-state.db-shm
