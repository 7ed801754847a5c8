# Every target sets up what it needs: a virtual environment in .venv with the
# Python dependencies, and kube-apiserver, etcd and kubectl built from Go
# modules into a cache outside the checkout (tools/control-plane.sh).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help test unit demo crd control-plane clean

help:
	@echo "make test           install everything needed and run the whole test suite"
	@echo "make demo           install everything needed and run the local demo"
	@echo "make unit           run the unit tests only (no control plane)"
	@echo "make crd            regenerate crds/messagetracker.yaml from the models"
	@echo "make control-plane  build or find kube-apiserver, etcd and kubectl and print their folder"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required; set PYTHON=...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

control-plane:
	@bash tools/control-plane.sh

test: $(STAMP)
	KUBEBUILDER_ASSETS="$$(bash tools/control-plane.sh)" $(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP)
	KUBEBUILDER_ASSETS="$$(bash tools/control-plane.sh)" $(BIN)/replytracker demo

crd: $(STAMP)
	$(BIN)/replytracker crd > crds/messagetracker.yaml

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info
