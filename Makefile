# Arcade STEM — the two commands a user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: help install mosquitto test-tools chromium test test-browser test-fast lint run bench clean

help:
	@echo "make run        start the whole system on this machine"
	@echo "make test       install everything needed and run every test"
	@echo "make test-browser  the test-checkout page in a real headless chromium"
	@echo "make test-fast  the tests without the slow end-to-end suites"
	@echo "make install    .venv with the arcade command (and the test packages)"
	@echo "make lint       ruff"
	@echo "make bench      print the benchmark tables"

# $(call apt_install,CHECK,PACKAGES): Debian packages from the system package manager when CHECK
# fails and we may install them (as root, or with sudo).
define apt_install
	@$(1) || { \
	  echo "Installing $(2) with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(2); \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq $(2); \
	  else echo "missing: $(2); install them with your package manager"; exit 1; fi; }
endef

# Debian's python3 cannot make a venv without python3-venv: say so instead of failing inside.
$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "$(PYTHON) -m venv needs the python3-venv package: sudo apt-get install python3-venv"; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# What running needs: the API and the arcade tools. Never npm or the test packages.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[tools]'
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[tools,test]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

install: $(TEST_STAMP)
	@echo "arcade is installed in $(BIN): call it as $(BIN)/arcade, or put it on this shell's PATH with:  . $(BIN)/activate"

# The broker, and mosquitto_sub / mosquitto_pub for the seed's examples.
mosquitto:
	$(call apt_install,{ command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null && command -v mosquitto_sub >/dev/null,mosquitto mosquitto-clients)

# libfaketime (Debian's faketime): the firmware tests start a board with its clock at 2000-01-01,
# as an ESP32's RTC reads after power-on.
test-tools:
	$(call apt_install,command -v curl >/dev/null,curl)
	$(call apt_install,[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ],faketime)

# The real MicroPython for the firmware tests and `make bench`: the folder holding micropython,
# micropython-32 and micropython-esp32sock (without them those tests skip; with CI=true they fail).
ARCADE_MICROPYTHON ?= $(abspath ../shared/micropython/bin)
export ARCADE_MICROPYTHON

test: $(TEST_STAMP) node_modules/.installed mosquitto test-tools
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not browser"

# Debian's chromium (no browser download), like mosquitto.
chromium:
	$(call apt_install,[ -x /usr/bin/chromium ],chromium)

test-browser: $(TEST_STAMP) node_modules/.installed mosquitto chromium
	$(BIN)/pytest -q -m browser

test-fast: $(TEST_STAMP) node_modules/.installed mosquitto test-tools
	$(BIN)/pytest -q -m "not slow"

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# make run RUN_ARGS="--mqtt-port 1884"  or  RUN_ARGS="--host 0.0.0.0 --cabinets 3"
run: $(RUN_STAMP) mosquitto
	$(BIN)/arcade run $(RUN_ARGS)

bench: $(TEST_STAMP) node_modules/.installed mosquitto
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache

# AWS: build the Lambda image and create or update the stack (README: Deploy to AWS).
.PHONY: deploy
deploy:
	@command -v sam >/dev/null || { echo "AWS SAM CLI is missing: see README, Deploy to AWS"; exit 1; }
	sam build && sam deploy --guided
