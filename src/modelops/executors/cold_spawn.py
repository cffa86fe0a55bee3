"""`cold` with start method `spawn`: a new interpreter per task, which runs one task and exits.

Runs in the worker. Maximum paranoia: nothing is shared with any other task, not even imports; the
price is a full interpreter start plus the model's imports for every task.
"""

from __future__ import annotations

import logging
import threading
import time

from modelops.bundles import Bundle
from modelops.executors.base import Executor, ExecutorClosed, RunOutcome, deadline_for
from modelops.executors.child_handle import ChildHandle
from modelops.executors.events import NO_EVENTS, ExecutorEvents
from modelops.executors.protocol import TaskMessage
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")


class ColdSpawnExecutor(Executor):
    name = "cold"
    cold_start = "spawn"

    def __init__(self, task_timeout_s: float, memory_limit_mb: int = 0, events: ExecutorEvents = NO_EVENTS):
        self.events = events
        self.task_timeout_s = task_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._running: set[ChildHandle] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, task: Task, bundle: Bundle, deadline: float | None = None) -> RunOutcome:
        """`deadline` (monotonic) when the task's timeout started earlier (cold fork's fallback)."""
        started = time.time()
        t0 = time.perf_counter()
        if deadline is None:
            deadline = deadline_for(self.task_timeout_s)
        child = ChildHandle(max_tasks=1, memory_limit_mb=self.memory_limit_mb, python=bundle.child_python)
        with self._lock:
            if self._closed:
                child.kill()
                raise ExecutorClosed("executor is closed")
            self._running.add(child)
        try:
            logger.info("Cold runner started: PID %d", child.pid)
            logger.info("Child process PID %d running task %s (Executor: cold)", child.pid, task.task_id)
            reply = child.run(TaskMessage.of(task, bundle), deadline, self.task_timeout_s)
        finally:
            child.stop()
            with self._lock:
                self._running.discard(child)
        if child.start_latency_s is not None:
            self.events.child_started("spawn", child.start_latency_s)
        return RunOutcome(reply, child.pid, started, time.perf_counter() - t0, cold_start=self.cold_start)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children = list(self._running)
        for child in children:
            # kill only: the thread running the task owns the child's pipes and closes them
            child.kill()
