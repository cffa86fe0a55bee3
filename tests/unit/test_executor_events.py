"""Each executor reports its children's start latency through its events hooks, and each task's
outcome carries the peak memory of the child that ran it (real child processes)."""

from __future__ import annotations

import pytest

from modelops.executors.events import ExecutorEvents
from modelops.worker.config import RuntimeConfig
from modelops.worker.executor_factory import build_executor
from tests.helpers import EXECUTOR_ENVS, make_task

START_METHOD = {"isolated_warm": "warm", "cold-spawn": "spawn", "cold-fork": "fork"}


class Recorded(ExecutorEvents):
    def __init__(self) -> None:
        self.started: list[tuple[str, float]] = []

    def child_started(self, start_method: str, seconds: float) -> None:
        self.started.append((start_method, seconds))


@pytest.mark.parametrize("executor", list(START_METHOD))
def test_child_start_latency_and_task_memory_peak(make_runtime, bundles_dir, executor):
    runtime = make_runtime(**EXECUTOR_ENVS[executor])  # for resolving the bundle only
    config = RuntimeConfig.from_env({"MODELOPS_BUNDLES_DIR": str(bundles_dir), **EXECUTOR_ENVS[executor]})
    events = Recorded()
    built = build_executor(config, 1, events)
    try:
        bundle = runtime.resolver.resolve("native_counter")
        outcomes = [built.run(make_task(runtime, "native_counter", {"i": i}), bundle) for i in range(2)]
    finally:
        built.close()
    assert all(o.reply.ok for o in outcomes)
    methods = {m for m, _ in events.started}
    assert methods == {START_METHOD[executor]}
    # warm starts one child for both tasks; spawn one per task; fork every spare it kept ready
    assert len(events.started) >= {"warm": 1, "spawn": 2, "fork": 2}[START_METHOD[executor]]
    assert all(0 < seconds < 60 for _, seconds in events.started)
    for outcome in outcomes:
        assert 4 * 2**20 < outcome.memory_peak_bytes < 4 * 2**30  # a Python process's resident set


def test_direct_has_no_child_and_no_memory_peak(make_runtime):
    runtime = make_runtime(**EXECUTOR_ENVS["direct"])
    result_outcome = runtime.executor.run(make_task(runtime, "native_counter"), runtime.resolver.resolve("native_counter"))
    assert result_outcome.memory_peak_bytes is None
