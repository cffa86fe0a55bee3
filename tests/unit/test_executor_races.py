"""Races between a task's thread and the rest of the worker, reproduced with real processes.

- close() during a running task must not close the child's pipes under the reading thread
  (EBADF, or bytes from another pipe that reused the fd number): the task ends as a child death
  the worker-closing path reschedules;
- a process that has been reaped must never be signalled by its PID: the PID may belong to
  someone else by then.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelops.worker.runtime import RESCHEDULE_KINDS
from tests.helpers import EXECUTOR_ENVS, REPO, make_task, pid_alive, wait_until


@pytest.mark.parametrize("executor", ["isolated_warm", "cold-spawn", "cold-fork"])
def test_close_during_a_task_with_a_timeout_ends_it_as_a_reschedulable_child_death(make_runtime, executor, tmp_path):
    runtime = make_runtime(**EXECUTOR_ENVS[executor], MODELOPS_TASK_TIMEOUT_SECONDS="60")
    marker = tmp_path / "grandchild.pid"
    task = make_task(runtime, "faulty", {"fault": "sleep", "seconds": 60, "grandchild": str(marker)})
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(runtime.execute, task)
        wait_until(marker.exists, timeout=60, what="the task to start")
        runtime.close()
        # before the fix: OSError (EBADF) out of execute() for warm and spawn
        result = future.result(timeout=30)
    assert result.status == "failed"
    assert result.error.kind in RESCHEDULE_KINDS, result.error
    assert runtime.closing
    grandchild = int(marker.read_text())
    wait_until(lambda: not pid_alive(grandchild), timeout=10, what="the task's grandchild to be killed")


DOOMED_WORKER = """
import json, sys, time
from modelops.tasks import Task
from modelops.worker.config import RuntimeConfig
from modelops.worker.runtime import WorkerRuntime

root = sys.argv[1]
env = {"MODELOPS_BUNDLES_DIR": root, "MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "fork"}
runtime = WorkerRuntime(RuntimeConfig.from_env(env), "doomed", 1)
bundle = runtime.resolver.resolve("faulty")
task = Task(bundle="faulty", bundle_digest=bundle.digest, entrypoint=bundle.entrypoint, params={}, seed=0)
assert runtime.execute(task).ok
executor = runtime.executor
deadline = time.monotonic() + 30
while len(executor.child_pids()) < 3 and time.monotonic() < deadline:  # zygote + 2 spares
    time.sleep(0.01)
zygote = executor.zygote_pids()[0]
print(json.dumps({"zygote": zygote, "spares": [p for p in executor.child_pids() if p != zygote]}), flush=True)
time.sleep(600)
"""

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def start_with_pid(pid: int, attempts: int = 50) -> subprocess.Popen | None:
    """A process (in its own session, so its group is its PID) that gets exactly `pid`."""
    for _ in range(attempts):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="needs a writable ns_last_pid (root)")
def test_spares_are_never_signalled_by_a_pid_someone_else_got(bundles_dir):
    """The zygote dies; its idle spares die with it (PDEATHSIG) and init reaps them. Their PIDs
    are handed to new, unrelated processes before the worker gets round to cleaning up. Before
    the fix the worker SIGKILLed the spares' process groups by number and killed the strangers."""
    worker = subprocess.Popen(
        [sys.executable, "-c", DOOMED_WORKER, str(bundles_dir)], stdout=subprocess.PIPE, text=True,
        cwd=REPO,
    )
    strangers: list[subprocess.Popen] = []
    try:
        info = json.loads(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGSTOP)  # the worker cannot react until the PIDs are reused
        os.kill(info["zygote"], signal.SIGKILL)
        for pid in info["spares"]:
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what=f"spare {pid} to be reaped")
        for pid in info["spares"]:
            stranger = start_with_pid(pid)
            if stranger is None:
                pytest.skip(f"could not get PID {pid} for a stranger (a busy machine took it)")
            strangers.append(stranger)
        os.kill(worker.pid, signal.SIGCONT)
        # the worker's reader sees the zygote's EOF, reaps it, and cleans up its spares
        time.sleep(3)
        assert [s.poll() for s in strangers] == [None] * len(strangers), "the worker killed a stranger"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.kill()
        worker.wait()
        for stranger in strangers:
            stranger.kill()
            stranger.wait()
