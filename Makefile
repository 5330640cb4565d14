# Arcade STEM — the two commands a user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install deps mosquitto chromium test test-browser test-fast lint run bench clean

help:
	@echo "make run        start the whole system on this machine"
	@echo "make test       install everything needed and run every test"
	@echo "make test-browser  the test-checkout page in a real headless chromium"
	@echo "make test-fast  the tests without the slow end-to-end suites"
	@echo "make lint       ruff"
	@echo "make bench      print the benchmark tables"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[tools,test]'
	touch $(STAMP)

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

install: $(STAMP)

# Mosquitto from the system package manager, when it is missing and we may install it.
mosquitto:
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { \
	  echo "Installing mosquitto with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto; \
	  else echo "mosquitto is missing: install it with your package manager"; fi; }

deps: $(STAMP) node_modules/.installed mosquitto

test: deps
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not browser"

# Debian's chromium from the system package manager (no browser download), like mosquitto.
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "Installing chromium with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	  else echo "chromium is missing: install it with your package manager"; fi; }

test-browser: deps chromium
	$(BIN)/pytest -q -m browser

test-fast: deps
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

# make run RUN_ARGS="--host 0.0.0.0 --cabinets 3"
run: deps
	$(BIN)/arcade run $(RUN_ARGS)

bench: deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache

# AWS: build the Lambda image and create or update the stack (docs/deploy.md).
.PHONY: deploy
deploy:
	@command -v sam >/dev/null || { echo "AWS SAM CLI is missing: see docs/deploy.md"; exit 1; }
	sam build && sam deploy --guided
