"""`mops doctor`'s verdict on one worker, from what the worker and its probes reported."""

from __future__ import annotations

from modelops.cli.doctor import check_worker
from modelops.tasks import Provenance, TaskError, TaskResult

WORKER_PID = 100


def probe(pid: int, calls: int = 1, executor: str = "cold", ok: bool = True) -> TaskResult:
    return TaskResult(
        task_id=f"t{pid}-{calls}",
        status="ok" if ok else "failed",
        params={},
        seed=0,
        outputs={"pid": pid, "calls_in_process": calls} if ok else None,
        error=None if ok else TaskError(kind="signal", type="ChildKilled", message="killed by SIGKILL", signal="SIGKILL"),
        provenance=Provenance(executor=executor, worker="w", worker_group="default", pid=pid,
                              bundle="modelops:probe", bundle_digest="d", started=1.0, duration_s=0.1),
    )


def info(executor: str | None) -> dict:
    return {"executor": executor, "pid": WORKER_PID, "error": None if executor else "setup failed"}


def test_cold_with_fresh_pids_is_ok():
    assert check_worker(info("cold"), [probe(1), probe(2), probe(3)], "cold") == []


def test_expected_executor_mismatch():
    problems = check_worker(info("isolated_warm"), [probe(1, 1, "isolated_warm"), probe(1, 2, "isolated_warm")], "cold")
    assert problems == ["runs executor isolated_warm, expected cold"]


def test_cold_that_reuses_a_process_is_caught():
    problems = check_worker(info("cold"), [probe(1), probe(1, 2)], "cold")
    assert any("reused a child process" in p for p in problems)
    assert any("saw state left by an earlier task" in p for p in problems)


def test_child_executor_running_in_the_worker_is_caught():
    problems = check_worker(info("isolated_warm"), [probe(WORKER_PID, 1, "isolated_warm")], None)
    assert any("inside the worker process" in p for p in problems)


def test_worker_without_runtime():
    assert check_worker(info(None), [], "cold") == ["no modelops runtime: setup failed"]


def test_failed_probe_is_reported():
    problems = check_worker(info("cold"), [probe(1), probe(2, ok=False)], "cold")
    assert problems == ["probe task failed: signal: killed by SIGKILL"]


def test_expect_cold_start_fork_fails_a_worker_serving_a_bundle_by_spawn():
    worker = {**info("cold"), "cold_start": "fork"}
    probes = [probe(1), probe(2), probe(3)]
    assert check_worker(worker, probes, "cold", "fork") == []
    worker["spawn_fallbacks"] = {"sir@sha256:ab": {"reason": "after importing ... 2 threads: t", "tasks": 7}}
    (problem,) = check_worker(worker, probes, "cold", "fork")
    assert "serves bundle(s) by spawn instead of fork: sir@sha256:ab" in problem and "7 task(s)" in problem
    assert check_worker(worker, probes, "cold") == []  # without the flag: reported, not failed


def test_expect_cold_start_names_the_start_method_a_worker_runs():
    spawn = {**info("cold"), "cold_start": "spawn"}
    (problem,) = check_worker(spawn, [probe(1), probe(2)], None, "fork")
    assert "cold start spawn, expected cold with fork" in problem
    warm = {**info("isolated_warm"), "cold_start": None}
    assert check_worker(warm, [probe(1, executor="isolated_warm")], None, "fork")


def test_a_worker_refusing_a_bundle_is_reported():
    worker = {**info("cold"), "cold_start": "fork", "refused_bundles": {"m@sha256:1": "RNG at import"}}
    (problem,) = check_worker(worker, [probe(1)], "cold")
    assert "refuses every task of bundle m@sha256:1: RNG at import" in problem
