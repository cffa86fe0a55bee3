"""Day-two operations with Helm 4 and Helm 3: `helm upgrade` cold -> warm rolls only the worker pods,
an invalid value is refused before anything changes, and `helm rollback` restores cold."""

from __future__ import annotations

import pytest
from cluster_support import REPO, SCHEDULER, run_study_through_port_forward, wait_until_gone

STUDY = REPO / "examples" / "sir" / "study.json"


@pytest.fixture(scope="module", params=["helm4", "helm3"])
def release(releases, request):
    rel = releases.new(request.param)
    rel.install(["cold.yaml", "local.yaml"])
    yield rel
    rel.uninstall()


def worker_pod_names(rel) -> set[str]:
    return {p["metadata"]["name"] for p in rel.pods()}


def scheduler_uid(rel) -> str:
    (pod,) = rel.pods(SCHEDULER)
    return pod["metadata"]["uid"]


def test_upgrade_to_warm_rolls_only_the_workers(release, tmp_path):
    before, scheduler = worker_pod_names(release), scheduler_uid(release)
    release.upgrade(["warm.yaml", "local.yaml"])
    release.wait_rollout()
    after = worker_pod_names(release)
    assert after and not after & before, f"worker pods were not replaced: {before} -> {after}"
    assert scheduler_uid(release) == scheduler, "the scheduler pod was restarted by an executor change"
    for pod in after:
        log = release.wait_for_log(pod, "Executor: isolated_warm")
        assert "Executor: cold" not in log
    results = run_study_through_port_forward(release, STUDY, tmp_path / "warm.jsonl")
    assert {r["provenance"]["executor"] for r in results} == {"isolated_warm"}
    pids = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pids)) < len(pids), "warm children were not reused"


def test_invalid_executor_is_refused_with_no_new_revision(release):
    revisions = len(release.history())
    proc = release.upgrade(["warm.yaml", "local.yaml"], sets=["worker.executor.type=clod"], check=False)
    assert proc.returncode != 0
    # The schema names the field and the allowed values (helm does not echo the rejected one).
    assert "executor" in proc.stderr and "isolated_warm" in proc.stderr, proc.stderr
    assert len(release.history()) == revisions


def test_rollback_restores_cold(release):
    cold_revision = min(r["revision"] for r in release.history())
    before = worker_pod_names(release)
    release.helm("rollback", release.name, str(cold_revision), "--wait", "--timeout", "5m")
    release.wait_rollout()
    after = worker_pod_names(release)
    assert after and not after & before
    for pod in after:
        release.wait_for_log(pod, "Executor: cold")
    out = release.helm_test().stdout
    assert "Failed" not in out, out


def test_uninstall_leaves_nothing_behind(release):
    """Workloads, their pods and volume claims go with the release. Test pods are hooks, outside the
    release: Helm 4 removes a passing one right after `helm test`; Helm 3 keeps it (it could not show
    its logs otherwise), and that is the only thing left."""
    release.uninstall()
    left = wait_until_gone(release)
    if release.helm_name == "helm4":
        assert not left, f"helm uninstall left {left} behind"
    else:
        assert all(name.startswith(f"pod/{release.name}-modelops-dask-test-") for name in left), left
