"""Executors with real child processes: isolation, reuse, recycling, logs, output floods, faults."""

from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import CHILD_EXECUTORS, COLD_EXECUTORS, EXECUTOR_ENVS, make_task, pid_alive


def run_many(runtime, bundle, n, params=None):
    return [runtime.execute(make_task(runtime, bundle, {**(params or {}), "i": i}, seed=i)) for i in range(n)]


@pytest.mark.parametrize("executor", list(EXECUTOR_ENVS))
def test_sir_example_runs_and_records_provenance(make_runtime, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    task = make_task(runtime, "sir", {"beta": 0.3, "gamma": 0.1}, seed=11)
    result = runtime.execute(task)
    assert result.ok, result.error
    assert result.task_id == task.task_id
    assert result.outputs["final_size"] > 10 and len(result.outputs["series"]["I"]) == 17
    prov = result.provenance
    assert prov.executor == runtime.config.executor.value
    assert prov.cold_start == ("spawn" if executor == "cold-spawn" else "fork" if executor == "cold-fork" else None)
    assert prov.worker == "test-worker" and prov.worker_group == "default"
    assert prov.bundle_digest == task.bundle_digest and prov.bundle_digest.startswith("sha256:")
    assert prov.duration_s > 0 and prov.started > 0
    assert (prov.pid == os.getpid()) == (executor == "direct")


@pytest.mark.parametrize("executor", list(EXECUTOR_ENVS))
def test_same_task_same_result_under_every_executor(make_runtime, executor):
    reference = make_runtime(**EXECUTOR_ENVS["direct"])
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    params = {"beta": 0.35, "gamma": 0.1}
    expected = reference.execute(make_task(reference, "sir", params, seed=5)).outputs
    got = runtime.execute(make_task(runtime, "sir", params, seed=5)).outputs
    other_seed = runtime.execute(make_task(runtime, "sir", params, seed=6)).outputs
    assert got == expected
    assert other_seed != expected


def test_warm_reuses_one_child_and_leaks_native_state(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"])
    results = run_many(runtime, "native_counter", 4)
    assert all(r.ok for r in results)
    pids = {r.provenance.pid for r in results}
    assert len(pids) == 1 and os.getpid() not in pids
    assert [r.outputs["native_calls"] for r in results] == [1, 2, 3, 4]


@pytest.mark.parametrize("executor", COLD_EXECUTORS)
def test_cold_gives_every_task_a_fresh_process_and_no_leaked_state(make_runtime, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    results = run_many(runtime, "native_counter", 5)
    assert all(r.ok for r in results)
    pids = [r.provenance.pid for r in results]
    assert len(set(pids)) == 5 and os.getpid() not in pids
    assert [r.outputs["native_calls"] for r in results] == [1] * 5
    assert [r.outputs["python_calls"] for r in results] == [1] * 5
    assert [r.outputs["pid"] for r in results] == pids


def test_direct_runs_in_the_worker_process(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["direct"])
    results = run_many(runtime, "native_counter", 2)
    assert {r.outputs["pid"] for r in results} == {os.getpid()}
    assert results[1].outputs["native_calls"] == results[0].outputs["native_calls"] + 1


def test_warm_recycles_a_child_after_max_tasks(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"], MODELOPS_WARM_MAX_TASKS_PER_PROCESS="2")
    results = run_many(runtime, "native_counter", 5)
    pids = [r.provenance.pid for r in results]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert [r.outputs["native_calls"] for r in results] == [1, 2, 1, 2, 1]
    assert not pid_alive(pids[0])


def test_warm_pool_gives_each_thread_its_own_child(make_runtime):
    runtime = make_runtime(slots=2, **EXECUTOR_ENVS["isolated_warm"])
    tasks = [make_task(runtime, "faulty", {"fault": "sleep", "seconds": 0.5, "i": i}) for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(runtime.execute, tasks))
    assert all(r.ok for r in results)
    assert len({r.provenance.pid for r in results}) == 2


def test_warm_replaces_a_child_that_died_between_tasks(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"])
    first = runtime.execute(make_task(runtime, "native_counter", seed=1))
    os.kill(first.provenance.pid, signal.SIGKILL)
    time.sleep(0.2)
    second = runtime.execute(make_task(runtime, "native_counter", seed=2))
    assert second.ok and second.provenance.pid != first.provenance.pid
    assert second.outputs["native_calls"] == 1


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_close_stops_every_child(make_runtime, executor):
    runtime = make_runtime(slots=2, **EXECUTOR_ENVS[executor])
    results = run_many(runtime, "native_counter", 3)
    known = {r.provenance.pid for r in results} | set(runtime.describe()["child_pids"])
    runtime.close()
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in known) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in known if pid_alive(p)]


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_child_pid_log_line_for_every_task(make_runtime, executor, caplog):
    """Each task's line names its executor (`grep "Executor:"` finds a worker that has run tasks in the
    last lines of its log), and `Cold runner started` counts tasks: cold fork's spares, forked ahead
    and never given a task, log nothing at INFO."""
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    with caplog.at_level(logging.INFO, logger="modelops"):
        results = run_many(runtime, "native_counter", 3)
    messages = [r.getMessage() for r in caplog.records]
    kind = EXECUTOR_ENVS[executor]["MODELOPS_EXECUTOR_TYPE"]
    for result in results:
        line = f"Child process PID {result.provenance.pid} running task {result.task_id} (Executor: {kind})"
        assert line in messages
    started = [m for m in messages if m.startswith("Cold runner started: PID ")]
    if executor in COLD_EXECUTORS:
        assert sorted(started) == sorted(f"Cold runner started: PID {r.provenance.pid}" for r in results)
    else:
        assert not started


@pytest.mark.parametrize("executor", list(EXECUTOR_ENVS))
def test_a_model_flooding_stdout_and_stderr_completes(make_runtime, executor, capfd):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    results = run_many(runtime, "chatty", 2, {"kib": 4096})  # 4 MiB to each stream, per task
    assert all(r.ok for r in results), [r.error for r in results]
    out, err = capfd.readouterr()
    if executor != "direct":
        # a child's prints never reach the protocol or the worker's stdout
        assert "xxxx" not in out and err.count("x" * 1023) >= 2 * 2 * 4096


def test_bundle_changed_since_the_task_was_made_fails_loudly(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"])
    task = make_task(runtime, "sir", {"beta": 0.3, "gamma": 0.1})
    stale = task.model_copy(update={"bundle_digest": "sha256:" + "0" * 64})
    result = runtime.execute(stale)
    assert result.status == "failed" and result.error.kind == "runtime"
    assert "bundle changed mid-study" in result.error.message


@pytest.mark.parametrize("executor", list(EXECUTOR_ENVS))
def test_entrypoint_that_does_not_exist_is_a_failed_result(make_runtime, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    task = make_task(runtime, "sir").model_copy(update={"entrypoint": "sir_model:nope"})
    result = runtime.execute(task)
    assert result.status == "failed" and result.outputs is None
    assert "has no callable 'nope'" in result.error.message


@pytest.mark.parametrize("executor", list(EXECUTOR_ENVS))
def test_a_bundle_seeding_numpy_the_legacy_way_runs_with_every_derived_seed(make_runtime, executor):
    """Derived seeds lie in [0, 2**32): np.random.seed / RandomState accept every one."""
    from modelops.study import Study

    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    resolved = runtime.resolver.resolve("legacy_seed")
    study = Study(name="s", bundle="legacy_seed", parameters=[{}], replicates=3, base_seed=11)
    results = [runtime.execute(t) for t in study.tasks(resolved.digest, resolved.entrypoint)]
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.outputs["draw"] for r in results}) == 3


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_every_child_gets_the_same_thread_environment(make_runtime, executor, monkeypatch):
    """Warm, spawn and fork children: native thread pools sized 1, unless the worker's env says."""
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    result = runtime.execute(make_task(runtime, "thread_env"))
    assert result.ok, result.error
    assert set(result.outputs["threads_env"].values()) == {"1"}, result.outputs
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the operator's choice, in the worker's env
    override = make_runtime(**EXECUTOR_ENVS[executor])
    result = override.execute(make_task(override, "thread_env", {"i": 1}))
    assert result.outputs["threads_env"]["MKL_NUM_THREADS"] == "3"
    assert result.outputs["threads_env"]["OMP_NUM_THREADS"] == "1"
