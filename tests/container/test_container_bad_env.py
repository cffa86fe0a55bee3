"""A worker container whose env names an unknown executor exits non-zero, naming the variable."""

from __future__ import annotations

import subprocess

import pytest
from container_support import (
    HELM,
    CHART,
    VALUES,
    build_run_spec,
    pod_template,
    render,
    run_to_exit,
    workloads,
)

pytestmark = pytest.mark.container


@pytest.fixture
def worker_pod(chart):
    manifests = render([VALUES / "cold.yaml"])
    return manifests, pod_template(workloads(manifests, "worker")[0])


def test_clod_worker_exits_naming_the_variable(image, worker_pod, containers):
    manifests, pod = worker_pod
    spec = build_run_spec(pod, image, manifests, env_override={"MODELOPS_EXECUTOR_TYPE": "clod"})
    code, logs = run_to_exit(spec, containers, timeout=90)
    assert code != 0, logs
    assert "MODELOPS_EXECUTOR_TYPE" in logs and "clod" in logs
    assert "Executor:" not in logs  # no executor was ever built


def test_clod_stops_dask_even_without_the_entrypoint(image, worker_pod, containers):
    """A user who bypasses the entrypoint still gets no worker: the preload refuses at import."""
    manifests, pod = worker_pod
    spec = build_run_spec(pod, image, manifests, env_override={"MODELOPS_EXECUTOR_TYPE": "clod"})
    entry = spec.options.index("--entrypoint") if "--entrypoint" in spec.options else None
    if entry is not None:
        del spec.options[entry:entry + 2]
    assert spec.argv[0] == "worker", spec.argv
    address = spec.argv[1]
    spec.options += ["--entrypoint", "dask"]
    spec.argv = ["worker", address, "--preload", "modelops.worker.preload", "--no-dashboard"]
    code, logs = run_to_exit(spec, containers, timeout=90)
    assert code != 0, logs
    assert "MODELOPS_EXECUTOR_TYPE" in logs and "clod" in logs


def test_chart_schema_rejects_clod_before_anything_runs(chart):
    proc = subprocess.run(
        [str(HELM), "template", "x", str(CHART), "-f", str(VALUES / "cold.yaml"),
         "--set", "worker.executor.type=clod"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "clod" in proc.stderr or "executor" in proc.stderr
