# podnet: `make demo` runs a local multi-host cluster with the demo app; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two workers (tests/conftest.py says which modules may run beside each other).
PYTEST_ARGS ?= --durations=30 -n 2 --dist loadgroup
# Debian packages that the tests use as real peers; installed when missing and we are root.
TEST_DEBS := etcd-server etcd-client tshark bind9-dnsutils bird2 iproute2 iputils-ping curl busybox iperf3 openssl docker.io docker-compose debootstrap wireguard-go wireguard-tools chromium containernetworking-plugins
BENCH_DEBS := dnsperf unbound passt

.PHONY: venv deps test lint demo bench clean compose-demo compose-down

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

deps:
	@./deploy/install-debs.sh $(TEST_DEBS)

# The import contracts and ruff run first: a layering break fails the tests as a failing test does.
test: venv deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

# import-linter reads packages from disk, so it checks a plain (non-editable) install of the tree, where
# the top-level folders sit inside podnet/ as they do for users; it runs from there so that the source tree's
# own podnet/ folder does not shadow the install.
lint: venv
	$(VENV)/bin/ruff check .
	rm -rf build
	$(PY) -m pip install -q --no-deps --target build/lint . 2>/dev/null
	cd build/lint && ../../$(VENV)/bin/lint-imports ../../pyproject.toml --no-cache

# A cluster left running by an earlier `make demo` is stopped first.
demo: venv
	@$(VENV)/bin/podnet down >/dev/null 2>&1 || true
	$(VENV)/bin/podnet up --nodes 3 --demo

bench: venv
	@./deploy/install-debs.sh $(TEST_DEBS) $(BENCH_DEBS)
	$(PY) bench/run_all.py $(BENCH)

clean:
	-$(VENV)/bin/podnet clean
	rm -rf $(VENV) .pytest_cache

# The cluster in containers, one per host (deploy/docker-compose.yml); root, or a member of the docker group.
compose-demo: venv
	PODNET=$(VENV)/bin/podnet PYTHON=$(PY) ./deploy/compose/up.sh
	$(VENV)/bin/podnet compose demo --home "$${PODNET_COMPOSE_HOME:-$(CURDIR)/deploy/.home}"

compose-down:
	./deploy/compose/down.sh
