"""A chunk under isolated_warm goes to one warm child in one message and comes back one reply per task,
with every per-task guarantee of single tasks: own result, seed, PID, failure, timeout, and a child that
dies mid-chunk (real child processes; requests counted through the executor's events)."""

from __future__ import annotations

import pytest

from modelops.executors.events import ExecutorEvents
from tests.helpers import EXECUTOR_ENVS, make_task, pid_alive


class Requests(ExecutorEvents):
    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    def child_request(self, start_method: str, tasks: int) -> None:
        self.requests.append((start_method, tasks))


def warm_runtime(make_runtime, **env: str):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"], **env)
    runtime.executor.events = events = Requests()
    return runtime, events


def run_chunk(runtime, tasks):
    return list(runtime.execute_chunk(tasks, {}))


def test_a_chunk_is_one_request_to_one_child_with_a_result_per_task(make_runtime):
    runtime, events = warm_runtime(make_runtime)
    tasks = [make_task(runtime, "native_counter", {"i": i}, seed=100 + i) for i in range(5)]
    results = run_chunk(runtime, tasks)
    assert events.requests == [("warm", 5)]  # before: five requests of one task each
    assert [r.task_id for r in results] == [t.task_id for t in tasks]
    assert [r.seed for r in results] == [100 + i for i in range(5)]
    assert all(r.ok for r in results)
    # the same warm child ran them in order, each task its own call
    assert [r.outputs["python_calls"] for r in results] == [1, 2, 3, 4, 5]
    assert {r.provenance.pid for r in results} == {results[0].outputs["pid"]}
    # the next chunk reuses that child
    more = run_chunk(runtime, [make_task(runtime, "native_counter", {"i": 9})])
    assert more[0].outputs["python_calls"] == 6


def test_a_chunk_gives_the_same_outputs_as_single_tasks(make_runtime):
    runtime, _ = warm_runtime(make_runtime)
    tasks = [make_task(runtime, "sir", {"beta": 0.3, "gamma": 0.1}, seed=s) for s in (1, 2, 3)]
    chunked = [r.outputs for r in run_chunk(runtime, tasks)]
    single = [runtime.execute(t).outputs for t in tasks]
    assert chunked == single


def test_a_failing_task_fails_alone_and_the_rest_of_the_chunk_runs(make_runtime):
    runtime, events = warm_runtime(make_runtime)
    faults = ["none", "exception", "not_a_dict", "unserialisable", "none"]
    results = run_chunk(runtime, [make_task(runtime, "faulty", {"fault": f}) for f in faults])
    assert events.requests == [("warm", 5)]
    assert [r.status for r in results] == ["ok", "failed", "failed", "failed", "ok"]
    assert [r.error.kind for r in results[1:4]] == ["exception", "serialization", "serialization"]
    assert results[1].error.type == "ValueError"
    assert len({r.provenance.pid for r in results}) == 1  # no child died


@pytest.mark.parametrize("fault", ["segfault", "sigkill", "exit"])
def test_a_child_dying_mid_chunk_fails_that_task_as_a_single_task_and_keeps_the_others(make_runtime, fault):
    runtime, events = warm_runtime(make_runtime)
    faults = ["none", "none", fault, "none", "none"]
    results = run_chunk(runtime, [make_task(runtime, "faulty", {"fault": f, "i": i}) for i, f in enumerate(faults)])
    single = runtime.execute(make_task(runtime, "faulty", {"fault": fault, "i": 99}))
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok", "ok"]
    died, expected = results[2].error, single.error
    assert (died.kind, died.type, died.signal, died.exit_code, died.retryable) == (
        expected.kind, expected.type, expected.signal, expected.exit_code, expected.retryable)
    first_child = results[0].provenance.pid
    assert results[1].provenance.pid == results[2].provenance.pid == first_child
    assert not pid_alive(first_child)
    # the two tasks that never started went to a new child in one request
    assert results[3].provenance.pid == results[4].provenance.pid != first_child
    assert events.requests[:2] == [("warm", 5), ("warm", 2)]


def test_a_task_outliving_the_timeout_times_out_alone(make_runtime):
    runtime, _ = warm_runtime(make_runtime, MODELOPS_TASK_TIMEOUT_SECONDS="3")
    faults = [{"fault": "none"}, {"fault": "sleep", "seconds": 600}, {"fault": "none"}]
    results = run_chunk(runtime, [make_task(runtime, "faulty", p) for p in faults])
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].error.kind == "timeout"
    assert not pid_alive(results[1].provenance.pid)
    assert results[2].provenance.pid != results[1].provenance.pid


def test_the_timeout_is_per_task_not_per_chunk(make_runtime):
    # three tasks of 2 s under a 5 s limit: the chunk takes longer than the limit, no task does
    runtime, events = warm_runtime(make_runtime, MODELOPS_TASK_TIMEOUT_SECONDS="5")
    tasks = [make_task(runtime, "faulty", {"fault": "sleep", "seconds": 2, "i": i}) for i in range(3)]
    results = run_chunk(runtime, tasks)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert events.requests == [("warm", 3)]


def test_max_tasks_per_process_splits_a_chunk_between_children(make_runtime):
    runtime, events = warm_runtime(make_runtime, MODELOPS_WARM_MAX_TASKS_PER_PROCESS="2")
    results = run_chunk(runtime, [make_task(runtime, "native_counter", {"i": i}) for i in range(5)])
    assert [r.outputs["python_calls"] for r in results] == [1, 2, 1, 2, 1]
    assert len({r.provenance.pid for r in results}) == 3
    assert events.requests == [("warm", 2), ("warm", 2), ("warm", 1)]


def test_a_chunk_stopped_part_way_kills_its_child_and_runs_no_more(make_runtime):
    runtime, _ = warm_runtime(make_runtime)
    tasks = [make_task(runtime, "faulty", {"fault": "none", "i": 0})] + [
        make_task(runtime, "faulty", {"fault": "sleep", "seconds": 600, "i": i}) for i in (1, 2)]
    stream = runtime.execute_chunk(tasks, {})
    first = next(stream)
    assert first.ok
    stream.close()  # what run_chunk does when the worker closes mid-chunk
    assert not pid_alive(first.provenance.pid)
    assert runtime.executor.child_pids() == []


@pytest.mark.parametrize("executor", ["cold-fork", "direct"])
def test_other_executors_run_a_chunk_one_task_at_a_time(make_runtime, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    results = run_chunk(runtime, [make_task(runtime, "native_counter", {"i": i}) for i in range(3)])
    assert all(r.ok for r in results)
    if executor == "cold-fork":  # a fresh forked child per task, as before chunks
        assert len({r.provenance.pid for r in results}) == 3
        assert [r.outputs["native_calls"] for r in results] == [1, 1, 1]
