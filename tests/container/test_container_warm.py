"""values/warm.yaml rendered and run as containers: long-lived children, PIDs repeat across tasks."""

from __future__ import annotations

import pytest
from container_support import (
    running_cluster,
    VALUES,
    build_run_spec,
    child_pids,
    helm_test_pods,
    run_study,
    run_to_exit,
    study_size,
)

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def warm(image, chart):
    with running_cluster([VALUES / "warm.yaml"], image) as cluster:
        yield cluster


def test_warm_reuses_processes(warm, tmp_path):
    results = run_study(warm.address, tmp_path / "results.jsonl")
    n = study_size()
    assert len(results) == n and all(r["status"] == "ok" for r in results)
    assert {r["provenance"]["executor"] for r in results} == {"isolated_warm"}
    pids = [r["provenance"]["pid"] for r in results]
    assert len(set(pids)) < n, f"warm gave every task its own process: {pids}"
    logs = warm.worker_logs()
    assert "Executor: isolated_warm" in logs and "Executor: cold" not in logs
    logged = child_pids(logs)
    assert len(logged) >= n and len(set(logged)) < len(logged)


def test_helm_test_pod_passes(warm):
    pods = helm_test_pods(warm.manifests)
    assert pods
    for pod in pods:
        spec = build_run_spec(pod, warm.scheduler.image, warm.manifests, name_prefix="mops-ct-test")
        code, logs = run_to_exit(spec, warm.containers)
        assert code == 0, logs
