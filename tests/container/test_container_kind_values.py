"""values/kind.yaml + values/cold.yaml (resource limits, 2 threads) run as containers, without kind."""

from __future__ import annotations

import pytest
from container_support import (
    VALUES,
    build_run_spec,
    child_pids,
    helm_test_pods,
    render,
    run_study,
    run_to_exit,
    start_cluster,
    study_size,
)

pytestmark = pytest.mark.container


def test_kind_values_with_cold_override(image, chart, containers, tmp_path):
    manifests = render([VALUES / "kind.yaml", VALUES / "cold.yaml"])
    cluster = start_cluster(manifests, image, containers)
    for worker in cluster.workers:
        assert "--memory" in worker.options  # the limits really apply to the container
    results = run_study(cluster.address, tmp_path / "results.jsonl")
    n = study_size()
    assert len(results) == n and all(r["status"] == "ok" for r in results)
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    assert len({r["provenance"]["pid"] for r in results}) == n
    logs = cluster.worker_logs()
    assert "Executor: cold" in logs and len(set(child_pids(logs))) >= n
    for pod in helm_test_pods(manifests):
        code, out = run_to_exit(build_run_spec(pod, image, manifests, name_prefix="mops-ct-test"), containers)
        assert code == 0, out
