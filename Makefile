# signgate: `make demo` shows the main job on a local registry; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: all demo test unit e2e bench tools system-packages venv clean

all: test

system-packages:
	@./scripts/system-packages.sh

# The hook's runtime requirements only: all that `make demo` needs.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(VENV)/.installed $(VENV)/checkov/.installed

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt requirements-chart.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# checkov pins packaging<24, which pytest 9 cannot live with: it gets a venv of its own.
$(VENV)/checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

# Real cosign v2/v3, shell-operator, kube-apiserver, kubectl and etcd, built from their Go modules
# into a cache outside the checkout (scripts/versions.env has the versions). A second call does nothing.
tools:
	@./scripts/tools.sh $(TOOLS)

demo: $(VENV)/.runtime
	@./scripts/system-packages.sh --demo
	$(PY) demo/demo.py

# Everything: unit, integration, the real control plane (e2e) and the cosign interop matrix.
test: system-packages venv tools
	$(PY) -m pytest

# The unit tests alone (tests/unit): no registry, no subprocess, so they run in seconds with
# requirements.txt, pytest and hypothesis only. tests/integration holds the real registry,
# notary-server, chart and service tests; `make e2e` the real peers.
unit: venv
	$(PY) -m pytest tests/unit

# Only the real-peers tests: a control plane, shell-operator and real cosign.
e2e: system-packages venv tools
	$(PY) -m pytest tests/e2e tests/interop

# bench/RESULTS.md; real cosign v3 side by side with signgate on the same images
# (bench/RESULTS-cosign.md); and every cold and warm case at RTT 0 and 50 ms through a TLS,
# token-auth registry behind a latency proxy, with critical-path round trips (bench/RESULTS-latency.md).
bench: system-packages venv tools
	$(PY) bench/bench.py
	$(PY) bench/cosign_side_by_side.py --output bench/RESULTS-cosign.md
	$(PY) bench/realistic.py --output bench/RESULTS-latency.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
