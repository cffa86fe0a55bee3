"""A values override of worker.executor.type: new worker containers report the new executor."""

from __future__ import annotations

import pytest
from container_support import (
    VALUES,
    Containers,
    build_run_spec,
    helm_test_pods,
    pod_template,
    render,
    run_study,
    run_to_exit,
    start_cluster,
    start_workers,
    workloads,
)

pytestmark = pytest.mark.container


def test_override_rolls_workers_to_the_new_executor(image, chart, tmp_path):
    before = render([VALUES / "cold.yaml"])
    after = render([VALUES / "cold.yaml"], ["worker.executor.type=direct"])
    # The env lives in the pod template, so the change alone makes `helm upgrade` roll the pods.
    old_tpl = pod_template(workloads(before, "worker")[0])
    new_tpl = pod_template(workloads(after, "worker")[0])
    assert old_tpl != new_tpl
    # The scheduler does not change with the workers' executor.
    assert pod_template(workloads(before, "scheduler")[0]) == pod_template(workloads(after, "scheduler")[0])

    containers = Containers()
    try:
        cluster = start_cluster(before, image, containers)
        first = run_study(cluster.address, tmp_path / "before.jsonl")
        assert {r["provenance"]["executor"] for r in first} == {"cold"}

        # "helm upgrade": the old worker pods go, new ones start from the new rendering.
        for worker in cluster.workers:
            containers.remove(worker.name)
        new_workers = start_workers(after, image, containers)
        logs = "\n".join(containers.logs(w.name) for w in new_workers)
        assert "Executor: direct" in logs and "Executor: cold" not in logs
        second = run_study(cluster.address, tmp_path / "after.jsonl")
        assert {r["provenance"]["executor"] for r in second} == {"direct"}
        assert all(r["status"] == "ok" for r in second)

        for pod in helm_test_pods(after):
            code, out = run_to_exit(build_run_spec(pod, image, after, name_prefix="mops-ct-test"), containers)
            assert code == 0, out
    except BaseException:
        print(containers.dump())
        raise
    finally:
        containers.remove_all()
