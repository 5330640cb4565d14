# Arcade STEM — the two commands a user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install deps mosquitto faketime chromium test test-browser test-fast lint run bench clean

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

# libfaketime (Debian's faketime package): the firmware tests start a board with its clock at
# 2000-01-01, as an ESP32's RTC reads after power-on.
faketime:
	@[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || { \
	  echo "Installing faketime with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq faketime; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq faketime; \
	  else echo "faketime is missing: install it with your package manager"; fi; }

# The real MicroPython for the firmware tests and `make bench`: ARCADE_MICROPYTHON names the folder
# holding micropython, micropython-32 and micropython-esp32sock (default: ../shared/micropython/bin;
# without them those tests skip, with CI=true they fail).
ARCADE_MICROPYTHON ?= $(abspath ../shared/micropython/bin)
export ARCADE_MICROPYTHON

deps: $(STAMP) node_modules/.installed mosquitto faketime

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
