# Set-up and everyday tasks. `make up` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CONFIG ?= configs/local.yaml
N ?= 4
# configs/local.yaml runs `python3`: the one in .venv, which has dask and distributed.
RUN := PATH="$(BIN):$$PATH" $(BIN)/clusterctl

.PHONY: install up status down test system-deps lint bench testbed testbed-down clean

$(BIN)/clusterctl: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dashboard]'
	touch $@

install: $(BIN)/clusterctl

up: install  # `up` shows the cluster's status once every worker is up
	$(RUN) up $(CONFIG)

status: install
	$(RUN) status

down: install
	$(RUN) down

# The tests need an OpenSSH server and iproute2 (network namespaces); CI runs as root.
system-deps:
	@if [ -x /usr/sbin/sshd ] && command -v ip >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server iproute2 >/dev/null; \
	else \
		echo "note: openssh-server/iproute2 missing and not root: SSH and multi-host tests will be skipped"; \
	fi

test: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/ruff check clusterctl tests benchmarks examples
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/ruff check clusterctl tests benchmarks examples
	$(BIN)/python -m mypy

bench: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m benchmarks

testbed: install system-deps
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m tests.helpers.testbed up --hosts $(N)

testbed-down:
	$(BIN)/python -m tests.helpers.testbed down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
