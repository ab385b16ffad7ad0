# signgate: `make demo` shows the main job on a local registry; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: all demo test bench tools system-packages venv clean

all: test

system-packages:
	@./scripts/system-packages.sh

venv: $(VENV)/.installed $(VENV)/checkov/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-chart.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# checkov pins packaging<24, which pytest 9 cannot live with: it gets a venv of its own.
$(VENV)/checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

demo: system-packages venv
	$(PY) demo/demo.py

test: system-packages venv
	$(PY) -m pytest

bench: system-packages venv
	$(PY) bench/bench.py

# The real programs the e2e and interop tests run (etcd, shell-operator, kube-apiserver, kubectl,
# cosign v3 and v2), built from their Go modules into ~/.cache/signgate/tools; a second call does
# nothing. `make tools TOOLS="etcd kubernetes"` builds only those.
tools:
	./scripts/tools.sh $(TOOLS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
