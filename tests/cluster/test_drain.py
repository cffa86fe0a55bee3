"""Drain on a real rollout: `helm upgrade` that changes the executor mid-study lets the old worker
pod finish the tasks it is running (preStop `mops drain`), hands the rest to the new pod, and no
task is started twice (provenance `attempt`)."""

from __future__ import annotations

import datetime
import json
import subprocess
import time

import pytest
from cluster_support import MOPS, load_results

TASK_SECONDS = 30  # long enough to be running while the new pod becomes ready
TASKS = 6
SETS = ["worker.nthreads=2", "worker.terminationGracePeriodSeconds=120"]


@pytest.fixture(scope="module")
def release(releases):
    rel = releases.new("helm4")
    rel.install(["warm.yaml", "local.yaml"], sets=SETS)
    yield rel
    rel.uninstall()


def wait_running_children(rel, pod: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while rel.logs(pod).count("Child process PID") < n:
        assert time.monotonic() < deadline, f"{pod} did not start {n} tasks within {timeout}s"
        time.sleep(0.5)


def test_upgrade_mid_study_finishes_running_tasks_and_starts_none_twice(release, tmp_path):
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "drain", "bundle": "sleep", "parameters": [{"seconds": TASK_SECONDS}],
                                 "replicates": TASKS, "base_seed": 7}))
    (old_pod,) = [p["metadata"]["name"] for p in release.pods()]
    old_log = open(tmp_path / "old-pod.log", "w")
    follow = subprocess.Popen([release.target.kubectl_bin, "--namespace", release.namespace, "logs", "-f", old_pod],
                              env=release.target.env, stdout=old_log, stderr=subprocess.STDOUT)
    output = tmp_path / "results.jsonl"
    with release.port_forward() as address:
        # --any-executor: the rollout moves the study from warm to cold workers (a study keeps to the executor it
        # starts on otherwise: tests/cluster/test_study_keeps_executor.py)
        client = subprocess.Popen([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output),
                                   "--any-executor"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_running_children(release, old_pod, 2)
        upgrade_at = time.time()
        t0 = time.monotonic()
        release.upgrade(["cold.yaml", "local.yaml"], sets=SETS)
        upgrade_s = time.monotonic() - t0
        out, err = client.communicate(timeout=600)
    assert client.returncode == 0, f"mops run failed:\n{out[-3000:]}\n{err[-3000:]}"
    deadline = time.monotonic() + 180
    while release.kubectl("get", "pod", old_pod, "--ignore-not-found", "-o", "name").strip():
        assert time.monotonic() < deadline, f"{old_pod} is still there 180 s after the upgrade"
        time.sleep(1)
    old_gone_s = time.monotonic() - t0
    follow.wait(timeout=30)
    old_log.close()
    log = (tmp_path / "old-pod.log").read_text()

    results = load_results(output.read_text())
    assert len(results) == TASKS and len({r["task_id"] for r in results}) == TASKS
    assert all(r["status"] == "ok" for r in results), [r["error"] for r in results if r["status"] != "ok"]
    # every task started exactly once: none was killed by the rollout and run again
    assert [r["provenance"]["attempt"] for r in results] == [1] * TASKS
    warm = [r for r in results if r["provenance"]["executor"] == "isolated_warm"]
    cold = [r for r in results if r["provenance"]["executor"] == "cold"]
    running_at_upgrade = [r for r in warm if r["provenance"]["started"] < upgrade_at
                          < r["provenance"]["started"] + r["provenance"]["duration_s"]]
    assert len(running_at_upgrade) == 2, warm  # the two tasks running at the upgrade finished on the old pod
    assert cold, "no task ran on the new (cold) pod"
    assert len(warm) + len(cold) == TASKS
    # the old pod drained: its two running tasks, nothing left unfinished, and it exited
    assert "Draining: 2 running task(s)" in log, log[-3000:]
    assert "Drained in" in log and "Drain deadline" not in log, log[-3000:]
    stamps = [log_time(line) for line in log.splitlines() if log_time(line)]
    drain_at = next(log_time(line) for line in log.splitlines() if "Draining:" in line)
    print(f"\nrollout with {TASK_SECONDS} s tasks running: helm upgrade --wait {upgrade_s:.1f} s; "
          f"old pod: drain began {drain_at - upgrade_at:.1f} s after the upgrade, its last log line "
          f"{stamps[-1] - upgrade_at:.1f} s after it (gone by {old_gone_s:.1f} s); "
          f"{[line for line in log.splitlines() if 'Drain' in line]}")


def log_time(line: str) -> float | None:
    """The UTC time of a `YYYY-mm-dd HH:MM:SS,mmm - ...` log line (Dask's and modelops' format)."""
    try:
        stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
