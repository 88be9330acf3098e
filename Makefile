# Set-up and everyday tasks. `make up` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CONFIG ?= configs/local.yaml
N ?= 4
# configs/local.yaml sets no `python:`: its local host runs .venv's python, the one clusterctl runs under.
RUN := PATH="$(BIN):$$PATH" $(BIN)/clusterctl

CYCLES ?= 100

.PHONY: install up status down test test-loaded soak system-deps lint bench bench-full testbed testbed-down clean

$(BIN)/clusterctl: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dashboard]'
	$(BIN)/python -m compileall -q clusterctl  # bytecode, as a non-editable install has: faster commands
	touch $@

install: $(BIN)/clusterctl

up: install  # `up` shows the cluster's status once every worker is up
	$(RUN) up $(CONFIG)

status: install
	$(RUN) status

down: install
	$(RUN) down

# The tests need an OpenSSH server and client (`ssh -G` is the reference for ssh config), iproute2
# (network namespaces) and Chromium (the dashboard seen by a real browser); CI runs as root.
system-deps:
	@if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
		&& command -v ssh-keygen >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client \
			iproute2 chromium >/dev/null; \
	else \
		echo "note: openssh-server/openssh-client/iproute2/chromium missing and not root: SSH, multi-host and browser tests will be skipped"; \
	fi

test: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/ruff check clusterctl testbed tests benchmarks examples
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

# The whole suite with every core kept busy by CPU hogs (started, then stopped by pid).
test-loaded: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m tests.helpers.loaded $(BIN)/python -m pytest

# The fault soak on the multi-host bed; `make test` runs 5 cycles of it.
soak: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	SOAK_CYCLES=$(CYCLES) $(BIN)/python -m pytest -s -p no:cacheprovider tests/test_soak.py

lint: install
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/ruff check clusterctl testbed tests benchmarks examples
	$(BIN)/python -m mypy

bench: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m benchmarks

# 1, 4, 8 and 16 worker hosts (a bed of 17 hosts).
bench-full: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m benchmarks --full

testbed: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m testbed up --hosts $(N)

testbed-down:
	$(BIN)/python -m testbed down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
