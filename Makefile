# Every target installs what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export HELM_PLUGINS := $(CURDIR)/$(TOOLS)/helm-plugins

.PHONY: venv tools demo test test-kind test-unit test-chart chart-lint docker-engine image image-offline bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

## Pinned helm 3, helm 4, helm-unittest and chart-testing into .tools/ (idempotent).
tools: venv
	bash scripts/install-tools.sh

## The main job: a real local cluster (scheduler + workers as processes) running the SIR study cold.
demo: venv
	$(VENV)/bin/mops run examples/sir/study.json --local --workers 2 --executor cold --output results.jsonl

## Starts a Docker engine if one is not running (see ../shared/DESIGN.md, machine facts).
docker-engine:
	bash scripts/docker-engine.sh start

## Worker image from an official slim Python base (needs a registry).
image: venv
	bash scripts/build-image.sh

## Worker image built with no network: debootstrap base + host wheelhouse.
image-offline: venv docker-engine
	bash scripts/build-image-offline.sh

## helm lint, helm-unittest (through ct's additional-commands) and ct lint.
chart-lint: tools
	ct lint --config ct.yaml --all

test-unit: venv
	$(PY) -m pytest tests/unit tests/integration

test-chart: tools
	$(PY) -m pytest tests/chart

## The whole suite: unit, local cluster, chart, container (kind skips with its reason).
test: venv tools
	bash scripts/docker-engine.sh start && bash scripts/build-image-offline.sh
	$(PY) -m pytest tests
	$(MAKE) chart-lint

## kind end-to-end tests (skip with their reason where kind or its node image is missing).
test-kind: venv tools image-offline
	$(PY) -m pytest tests/kind -m kind -rs

bench: venv
	$(VENV)/bin/mops bench

clean:
	rm -rf $(VENV) $(TOOLS) build dist src/*.egg-info
