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
	@echo "make help-image     the container image, dependency lock and kind targets"

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

# deploy/crd holds a copy because kustomize loads no file from outside deploy/.
crd: $(STAMP)
	$(BIN)/replytracker crd > crds/messagetracker.yaml
	cp crds/messagetracker.yaml deploy/crd/messagetracker.yaml

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info

# --- container image, dependency lock and kind ---------------------------------
# Images are built and run only where a Docker engine is available. The usual
# sequence is: make kind-up image kind-load kind-deploy, then make kind-test.

IMAGE ?= reply-tracker:dev
KIND_CLUSTER ?= replytracker
# requirements.lock is resolved for the Python of the image (3.11, see the
# Dockerfile), so it is compiled with that Python in a venv of its own.
LOCK_PYTHON ?= python3.11
LOCK_VENV := $(VENV)/lock-tools
PIP_TOOLS_VERSION := 7.7.0
# For example LOCK_ARGS=--upgrade, or LOCK_ARGS="--upgrade-package httpx".
LOCK_ARGS ?=

.PHONY: help-image lock image kind-up kind-load kind-deploy kind-test kind-down

help-image:
	@echo "make lock           recompile requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to move pins)"
	@echo "make image          docker build -t $(IMAGE) ."
	@echo "make kind-up        create the kind cluster $(KIND_CLUSTER) from kind-config.yaml"
	@echo "make kind-load      copy $(IMAGE) into the kind cluster's node"
	@echo "make kind-deploy    apply deploy/ to the kind cluster with the image $(IMAGE)"
	@echo "make kind-test      run the e2e suite against the kind cluster"
	@echo "make kind-down      delete the kind cluster"

$(LOCK_VENV)/.installed:
	@$(LOCK_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "make lock needs Python 3.11, the Python of the image; set LOCK_PYTHON=...")'
	$(LOCK_PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip-tools==$(PIP_TOOLS_VERSION)
	touch $@

lock: $(LOCK_VENV)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
		--generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links \
		--output-file=requirements.lock $(LOCK_ARGS) pyproject.toml

image:
	docker build -t $(IMAGE) .

kind-up:
	KIND_CLUSTER=$(KIND_CLUSTER) bash tools/kind/up.sh

kind-load:
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

kind-deploy:
	KIND_CLUSTER=$(KIND_CLUSTER) IMAGE=$(IMAGE) bash tools/kind/deploy.sh

kind-test: $(STAMP)
	KIND_CLUSTER=$(KIND_CLUSTER) PYTHON_BIN=$(BIN)/python bash tools/kind/test.sh $(PYTEST_ARGS)

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)
