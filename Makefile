# OSAI Usage: `make run` (everything on this machine) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
MANAGE := $(PYTHON) manage.py

.PHONY: install run test test-fast test-scale lint typecheck pytest bench static browser clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.lock
	touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) node_modules/.installed

static: install
	$(MANAGE) collectstatic --noinput -v 0

# Debian's Chromium for the browser tests (Playwright's own download cannot work here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The demo runs against the local OSAI sandbox, which is off unless OSAI_SANDBOX_URL is set.
SANDBOX_PORT ?= 8765
run: export OSAI_SANDBOX_URL = http://127.0.0.1:$(SANDBOX_PORT)/api
run: static
	$(MANAGE) migrate --noinput -v 0
	$(MANAGE) run_dev --sandbox-port $(SANDBOX_PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy osai osai_dashboard reports

pytest: static browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# While you work: everything but the tests that start real processes or a browser.
test-fast: static
	$(BIN)/pytest -m "not worker and not browser" $(PYTEST_ARGS)

# The same suite on PostgreSQL and the django-q2 Redis broker (both on 127.0.0.1 here).
SCALE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
SCALE_REDIS_URL ?= redis://127.0.0.1:6379/15
test-scale: static browser
	DATABASE_URL=$(SCALE_DATABASE_URL) REDIS_URL=$(SCALE_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

bench: static browser
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || echo "no wrk: the bench uses its bounded Python load loop"
	$(PYTHON) -m bench

clean:
	rm -rf $(VENV) node_modules staticfiles var
