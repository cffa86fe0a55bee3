"""values/cold.yaml rendered, its scheduler, worker and helm-test pods run as containers of the image."""

from __future__ import annotations

import re
import time

import pytest
from container_support import (
    running_cluster,
    COMM_PORT,
    VALUES,
    build_run_spec,
    child_pids,
    docker,
    helm_test_pods,
    project_version,
    render,
    run_study,
    run_to_exit,
    study_size,
)

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def cold(image, chart):
    with running_cluster([VALUES / "cold.yaml"], image) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cold_results(cold, tmp_path_factory):
    return run_study(cold.address, tmp_path_factory.mktemp("cold") / "results.jsonl")


def test_rendered_pods_are_what_the_containers_run(cold):
    """The specs really ask for what these tests prove works: non-root, read-only root, cold."""
    for spec in [cold.scheduler, *cold.workers]:
        sc = spec.container.get("securityContext") or {}
        assert sc.get("readOnlyRootFilesystem") is True, spec.container["name"]
        assert "--read-only" in spec.options and "--user" in spec.options
    for worker in cold.workers:
        assert worker.env.get("MODELOPS_EXECUTOR_TYPE") == "cold"
    assert cold.address == f"tcp://127.0.0.1:{COMM_PORT}"
    # The chart's default image tag is the version of the image these tests run.
    for spec in [cold.scheduler, *cold.workers]:
        assert spec.container["image"].rsplit(":", 1)[-1] == project_version()


def test_worker_logs_report_cold(cold, cold_results):
    logs = cold.worker_logs()
    assert "Executor: cold" in logs
    assert "Executor: isolated_warm" not in logs and "Executor: direct" not in logs
    assert re.search(r"Cold start: (fork|spawn)", logs)
    assert "Cold runner started: PID" in logs


def test_fresh_process_per_task(cold, cold_results):
    n = study_size()
    assert len(cold_results) == n
    assert all(r["status"] == "ok" for r in cold_results), [r["error"] for r in cold_results if r["error"]]
    assert {r["provenance"]["executor"] for r in cold_results} == {"cold"}
    pids = [r["provenance"]["pid"] for r in cold_results]
    assert len(set(pids)) == n, f"cold reused a process: {sorted(pids)}"
    logged = child_pids(cold.worker_logs())
    assert len(logged) >= n and len(set(logged)) == len(logged), logged
    assert set(pids) <= set(logged)


def test_helm_test_pod_passes(cold, cold_results):
    pods = helm_test_pods(cold.manifests)
    assert pods, "the chart renders no helm test pod"
    for pod in pods:
        spec = build_run_spec(pod, cold.scheduler.image, cold.manifests, name_prefix="mops-ct-test")
        code, logs = run_to_exit(spec, cold.containers)
        assert code == 0, f"helm test pod {pod['metadata']['name']} failed ({code}):\n{logs}"


def test_helm_test_pod_of_warm_values_fails_against_cold_workers(cold):
    """The helm test can fail: the warm rendering's test pod expects isolated_warm and must say no."""
    warm = render([VALUES / "warm.yaml"])
    pods = helm_test_pods(warm)
    assert pods
    spec = build_run_spec(pods[0], cold.scheduler.image, warm, name_prefix="mops-ct-test")
    code, logs = run_to_exit(spec, cold.containers)
    assert code != 0, f"a warm expectation passed against cold workers:\n{logs}"
    assert "cold" in logs


def test_pid1_is_tini_and_reaps_orphans(cold):
    """Orphans re-parent to PID 1; tini reaps them, so no zombie stays behind."""
    name = cold.workers[0].name
    assert docker("exec", name, "cat", "/proc/1/comm").stdout.strip() == "tini"
    cmdline = docker("exec", name, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline").stdout
    assert "dask worker" in cmdline and "--preload modelops.worker.preload" in cmdline
    # A process whose parent exits at once: the sleep is orphaned, then exits itself.
    docker("exec", name, "sh", "-c", "(sleep 0.2 &) ; exit 0")
    time.sleep(1.5)
    states = docker("exec", name, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null").stdout
    zombies = [line for line in states.splitlines() if re.match(r"\d+ \(.*\) Z ", line)]
    assert not zombies, zombies
    assert cold.containers.state(name)["Running"]


def test_sigterm_retires_worker_gracefully(cold, cold_results):
    """Runs last in this module: a pod's SIGTERM reaches Dask through tini, the worker closes cleanly."""
    worker = cold.workers[0]
    grace = int(worker.pod["spec"].get("terminationGracePeriodSeconds", 30))
    started = time.monotonic()
    docker("stop", "-t", str(grace), worker.name, timeout=grace + 30)
    elapsed = time.monotonic() - started
    state = cold.containers.state(worker.name)
    logs = cold.containers.logs(worker.name)
    assert state["ExitCode"] == 0, logs[-3000:]
    assert "signal-15" in logs
    assert elapsed < grace, f"took {elapsed:.1f}s, the kubelet would have killed it at {grace}s"
