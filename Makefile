# LabFleet: `make run` and `make test` are the whole setup on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test venv dev migrate bench lint clean guide-images

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

venv: $(STAMP)
dev: $(DEVSTAMP)

migrate: $(STAMP)
	mkdir -p var
	$(BIN)/labfleet db upgrade

## Create the venv, install, migrate, and serve on 127.0.0.1:8000 (SQLite, embedded broker).
run: migrate
	$(BIN)/labfleet serve --host 127.0.0.1 --port 8000

## Create the venv with dev dependencies and run the whole suite.
test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## ruff (rules and line length in pyproject.toml), the formatter's check, and mypy (strict on fleet.domain,
## fleet.services and drivers): zero findings.
lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Retake the user guide's screenshots (docs/images/guide-*.png) in a real Chromium, each role in zh and en.
guide-images: $(DEVSTAMP)
	LABFLEET_GUIDE_IMAGES=1 $(BIN)/python -m pytest -q tests/console/test_guide_screenshots.py

bench: $(DEVSTAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
