# Every target installs what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export HELM_PLUGINS := $(CURDIR)/$(TOOLS)/helm-plugins

.PHONY: venv tools demo test test-cluster test-unit test-chart chart-lint docker-engine image image-offline bench bench-throughput clean \
	cluster-up cluster-down

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
	bash scripts/ct-lint.sh

test-unit: venv
	$(PY) -m pytest tests/unit tests/integration

test-chart: tools
	$(PY) -m pytest tests/chart

## The whole suite: unit, local Dask cluster, chart, container, then the real Kubernetes tier.
## The cluster's Go builds (cluster/prebuild.sh) run in the background, at nice 19, meanwhile.
test: venv tools
	bash scripts/docker-engine.sh start && bash scripts/build-image-offline.sh
	bash cluster/build.sh versitygw >/dev/null
	bash cluster/prebuild.sh start
	$(PY) -m pytest tests --ignore=tests/cluster --ignore=tests/registry || { bash cluster/prebuild.sh stop; exit 1; }
	$(MAKE) chart-lint || { bash cluster/prebuild.sh stop; exit 1; }
	$(MAKE) test-cluster

## A single-node Kubernetes on this machine (root): built from the Go module proxy and Debian, with a
## local OCI registry holding this clone's image and chart. Writes .cluster/env. Idempotent.
cluster-up: venv tools
	bash cluster/up.sh
	bash cluster/publish.sh

## Stops what cluster-up started (by recorded PID) and removes its bridge, mounts and iptables chains.
cluster-down:
	bash cluster/down.sh
	bash scripts/docker-engine.sh stop

## The real-cluster tier: brings the cluster up, runs tests/cluster and tests/registry (its OCI registry),
## brings it down even when tests fail.
## Where this machine cannot run a cluster the tests skip with the reason (fail with MODELOPS_CLUSTER_REQUIRED=1).
test-cluster: venv tools
	bash cluster/test-tier.sh

bench: venv
	$(VENV)/bin/mops bench

## Study throughput (issue 15): plain Dask client.map against mops run per executor, 1,000 SIR tasks.
bench-throughput: venv
	$(VENV)/bin/mops bench --throughput examples/sir/study.json

clean:
	rm -rf $(VENV) $(TOOLS) build dist src/*.egg-info
