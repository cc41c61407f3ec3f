# Quick start: `make run` (demo) and `make test` (the whole suite). Both create .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: run test lint typecheck unit integration e2e bench clean serve

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q -e '.[dev,demo]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/jml demo

test: $(VENV)/.installed-dev
	@# Peers the suite uses from Debian: promtool (alert rule tests) and Chromium (status page).
	@# A peer that cannot be installed stops the run: no test skips for want of one.
	bash docker/prometheus/ensure_promtool.sh
	bash tests/e2e/ensure_chromium.sh
	@# The SCIM peers written in Node (tests/scim_peers): a failed install fails the run.
	bash tests/scim_peers/install.sh
	$(BIN)/ruff check jml connectors tests bench
	$(BIN)/mypy jml connectors
	@# -rs lists any skip; JML_NO_SKIPS=1 makes one a failure (tests/conftest.py).
	JML_NO_SKIPS=1 $(BIN)/python -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check jml connectors tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy jml connectors

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_sync.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
