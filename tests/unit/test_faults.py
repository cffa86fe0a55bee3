"""Faults injected for real: every one is a classified failed result, and the next task succeeds."""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers import CHILD_EXECUTORS, EXECUTOR_ENVS, make_task, pid_alive

# fault -> (kind, check on the error, retryable)
CHILD_FAULTS = {
    "exception": ("exception", lambda e: e.type == "ValueError" and "bad parameter set" in e.message
                  and "Traceback" in e.traceback, False),
    "exit": ("exit", lambda e: e.exit_code == 3, False),
    # the child's faulthandler wrote the crashing Python frame; the result carries it
    "segfault": ("signal", lambda e: e.signal == "SIGSEGV" and "Fatal Python error: Segmentation fault"
                 in (e.traceback or "") and 'faulty.py", line' in e.traceback and "in simulate" in e.traceback,
                 False),
    "sigkill": ("signal", lambda e: e.signal == "SIGKILL", True),
    "unserialisable": ("serialization", lambda e: "only JSON values and bytes" in e.message, False),
    "not_a_dict": ("serialization", lambda e: "must return a dict" in e.message, False),
}


def assert_next_task_succeeds(runtime):
    after = runtime.execute(make_task(runtime, "faulty", {"fault": "none"}, seed=99))
    assert after.ok, after.error


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
@pytest.mark.parametrize("fault", list(CHILD_FAULTS))
def test_child_fault_is_classified(make_runtime, executor, fault):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])
    result = runtime.execute(make_task(runtime, "faulty", {"fault": fault}))
    kind, check, retryable = CHILD_FAULTS[fault]
    assert result.status == "failed" and result.outputs is None
    assert result.error.kind == kind, result.error
    assert check(result.error), result.error
    assert result.error.retryable is retryable
    assert_next_task_succeeds(runtime)


@pytest.mark.parametrize("fault", ["exception", "unserialisable", "not_a_dict"])
def test_direct_in_process_faults_are_classified(make_runtime, fault):
    runtime = make_runtime(**EXECUTOR_ENVS["direct"])
    result = runtime.execute(make_task(runtime, "faulty", {"fault": fault}))
    kind, check, _ = CHILD_FAULTS[fault]
    assert result.error.kind == kind and check(result.error)
    assert_next_task_succeeds(runtime)


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_timeout_kills_the_whole_process_group(make_runtime, executor, tmp_path):
    runtime = make_runtime(**EXECUTOR_ENVS[executor], MODELOPS_TASK_TIMEOUT_SECONDS="1")
    marker = tmp_path / "grandchild.pid"
    result = runtime.execute(
        make_task(runtime, "faulty", {"fault": "sleep", "seconds": 60, "grandchild": str(marker)})
    )
    assert result.error.kind == "timeout"
    assert "MODELOPS_TASK_TIMEOUT_SECONDS=1" in result.error.message
    assert not pid_alive(result.provenance.pid)
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild), "the task's own child survived the timeout"
    assert_next_task_succeeds(runtime)


@pytest.mark.parametrize("executor", CHILD_EXECUTORS)
def test_memory_limit_is_enforced_and_classified_as_oom(make_runtime, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor], MODELOPS_TASK_MEMORY_LIMIT_MB="512")
    result = runtime.execute(make_task(runtime, "faulty", {"fault": "memory", "mb": 2048}))
    assert result.status == "failed" and result.error.kind == "oom", result.error
    assert result.error.retryable
    small = runtime.execute(make_task(runtime, "faulty", {"fault": "memory", "mb": 16}))
    assert small.ok and small.outputs["size"] == 16 * 1024 * 1024


def test_the_worker_process_survives_every_child_fault(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["isolated_warm"])
    for fault in CHILD_FAULTS:
        runtime.execute(make_task(runtime, "faulty", {"fault": fault}))
    assert pid_alive(os.getpid())
    assert_next_task_succeeds(runtime)


def test_a_failure_reply_and_a_result_error_have_the_same_fields():
    """Children build `Failure` (import-light dataclass), results validate it as `TaskError`: a field
    added to one and not the other would be dropped or rejected between child and result."""
    import dataclasses

    from modelops.failures import Failure
    from modelops.tasks import TaskError

    assert {f.name for f in dataclasses.fields(Failure)} == set(TaskError.model_fields)
    error = Failure(kind="signal", type="ChildKilled", message="m", signal="SIGSEGV", retryable=True).error()
    assert TaskError(**error).model_dump() == error
    with pytest.raises(ValueError):
        TaskError(**{**error, "kind": "meltdown"})
