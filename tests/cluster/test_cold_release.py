"""A cold release (values/cold.yaml, two worker pods): studies from an in-cluster client Job and from
`mops run` through a port-forward run every task in a fresh process, the pods' own logs prove it, and
a worker pod deleted mid-study (gracefully, and forcibly) loses and doubles no result."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import pytest
from cluster_support import (MOPS, REPO, check_fresh_process_per_task, load_results,
                             run_study_through_port_forward)

STUDY_IN_IMAGE = "/opt/modelops/bundles/sir/study.json"  # examples/ is copied to /opt/modelops/bundles
STUDY = REPO / "examples" / "sir" / "study.json"
N_STUDY_TASKS = len(json.loads(STUDY.read_text())["parameters"]) * json.loads(STUDY.read_text())["replicates"]


@pytest.fixture(scope="module")
def cold(releases):
    rel = releases.new()
    rel.install(["cold.yaml", "local.yaml"], sets=["worker.replicas=2"])
    return rel


def test_each_worker_pod_logs_its_executor(cold):
    pods = cold.pods()
    assert len(pods) == 2
    for pod in pods:
        log = cold.wait_for_log(pod["metadata"]["name"], "Cold start: fork")
        assert "Executor: cold" in log and "Bundle source: file" in log


def test_study_from_an_in_cluster_client_job(cold):
    out = cold.run_client_job(f"mops run {STUDY_IN_IMAGE} --scheduler @SCHEDULER@ --output /tmp/results.jsonl"
                              " && cat /tmp/results.jsonl")
    check_fresh_process_per_task(cold, load_results(out), N_STUDY_TASKS)
    assert "distinct child PIDs" in out


def test_study_through_a_port_forward(cold, tmp_path):
    results = run_study_through_port_forward(cold, STUDY, tmp_path / "results.jsonl")
    check_fresh_process_per_task(cold, results, N_STUDY_TASKS)


def test_helm_test_passes(cold):
    out = cold.helm_test().stdout
    assert "Phase:" in out and "Failed" not in out, out


def long_study(path, n: int) -> int:
    """A study of n tasks of ~0.2 s each (an epidemic that never dies out, run for 40,000 days)."""
    params = [{"beta": 0.05 + 0.001 * i, "gamma": 0.0, "days": 40_000, "report_every": 10_000} for i in range(n)]
    path.write_text(json.dumps({"name": "pod-loss", "bundle": "sir", "parameters": params, "replicates": 1,
                                "base_seed": 11}))
    return n


@pytest.mark.parametrize("how", ["graceful", "force"])
def test_worker_pod_deleted_mid_study_loses_no_result(cold, tmp_path, how):
    study, output = tmp_path / "study.json", tmp_path / "results.jsonl"
    n = long_study(study, 80)
    with cold.port_forward() as address:
        proc = subprocess.Popen([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 300
            while not output.exists() or len(output.read_text().splitlines()) < 10:
                assert proc.poll() is None, f"the study ended before the pod was deleted:\n{proc.stdout.read()}"
                assert time.monotonic() < deadline, "the study made no progress"
                time.sleep(0.2)
            victim = cold.pods()[0]["metadata"]["name"]
            extra = ["--grace-period=0", "--force"] if how == "force" else []
            cold.kubectl("delete", "pod", victim, "--wait=false", *extra)
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out[-3000:]
    results = load_results(output.read_text())
    ids = Counter(r["task_id"] for r in results)
    assert len(ids) == n and max(ids.values()) == 1, f"{len(ids)} distinct of {n}, doubled: {ids.most_common(2)}"
    assert all(r["status"] == "ok" for r in results)
    assert victim not in {p["metadata"]["name"] for p in cold.pods()}
    cold.wait_rollout()


def test_pid1_is_tini_and_reaps_orphans(cold):
    """A killed task's grandchildren re-parent to PID 1: tini must reap them, or zombies pile up."""
    pod = cold.pods()[0]["metadata"]["name"]
    cmdline = cold.kubectl("exec", pod, "-c", "worker", "--", "cat", "/proc/1/cmdline")
    assert cmdline.split("\0")[0].endswith("tini"), cmdline
    out = cold.kubectl("exec", pod, "-c", "worker", "--", "sh", "-c",
                       'sh -c "sleep 1 &"; sleep 3; cat /proc/[0-9]*/stat 2>/dev/null | cut -d" " -f2,3')
    zombies = [line for line in out.splitlines() if line.split()[-1] == "Z"]
    assert not zombies, out
