"""`isolated_warm`: long-lived child processes per bundle, reused across tasks. Runs in the worker.

Isolates tasks from the Dask worker, not from each other. Each bundle gets a
pool sized to the worker's thread count so threads never queue on one child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from modelops.bundles import Bundle
from modelops.executors.base import Executor, ExecutorClosed, RunOutcome, deadline_for, remaining
from modelops.executors.child_handle import ChildHandle
from modelops.executors.events import NO_EVENTS, ExecutorEvents
from modelops.executors.protocol import ChunkMessage, Reply, TaskMessage
from modelops.failures import timed_out
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")


class _Pool:
    def __init__(self, size: int, max_tasks: int, memory_limit_mb: int, python: str):
        self.size = size
        self.python = python  # what the bundle's children exec (Bundle.child_python)
        self.max_tasks = max_tasks
        self.memory_limit_mb = memory_limit_mb
        self.idle: list[ChildHandle] = []
        self.busy: set[ChildHandle] = set()
        self.cond = threading.Condition()
        self.closed = False

    def acquire(self, deadline: float | None = None) -> ChildHandle | None:
        """An idle or new child; None when `deadline` passed while every child was busy."""
        with self.cond:
            while True:
                if self.closed:
                    raise ExecutorClosed("executor is closed")
                while self.idle:
                    child = self.idle.pop()
                    if child.alive():
                        self.busy.add(child)
                        return child
                    logger.warning(
                        "Warm child process %d died while idle (exit %s); replacing it",
                        child.pid,
                        child.proc.returncode,
                    )
                    child.stop()
                if len(self.busy) < self.size:
                    break
                if deadline is not None and remaining(deadline) <= 0:
                    return None
                self.cond.wait(remaining(deadline))
        child = ChildHandle(max_tasks=self.max_tasks, memory_limit_mb=self.memory_limit_mb, python=self.python)
        with self.cond:
            self.busy.add(child)
        logger.info("Warm child process started: PID %d", child.pid)
        return child

    def release(self, child: ChildHandle) -> None:
        recycle = not child.alive() or (self.max_tasks and child.tasks_done >= self.max_tasks)
        with self.cond:
            self.busy.discard(child)
            if not recycle and not self.closed:
                self.idle.append(child)
            self.cond.notify()
        if recycle:
            child.stop()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            children = self.idle + list(self.busy)
            self.idle.clear()
            self.cond.notify_all()
        for child in children:
            # a busy child's pipes stay with the thread running its task, which closes them
            child.stop(grace=1.0)


class WarmExecutor(Executor):
    name = "isolated_warm"

    def __init__(
        self, slots: int, task_timeout_s: float, max_tasks_per_process: int, memory_limit_mb: int = 0,
        events: ExecutorEvents = NO_EVENTS,
    ):
        self.events = events
        self.slots = max(1, slots)
        self.task_timeout_s = task_timeout_s
        self.max_tasks_per_process = max_tasks_per_process
        self.memory_limit_mb = memory_limit_mb
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._lock = threading.Lock()

    def _pool(self, bundle: Bundle) -> _Pool:
        key = (bundle.name, bundle.digest)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(
                    self.slots, self.max_tasks_per_process, self.memory_limit_mb, bundle.child_python
                )
            return pool

    def run(self, task: Task, bundle: Bundle) -> RunOutcome:
        started = time.time()
        t0 = time.perf_counter()
        deadline = deadline_for(self.task_timeout_s)  # the whole task, waiting for a child included
        pool = self._pool(bundle)
        child = pool.acquire(deadline)
        if child is None:
            return RunOutcome(Reply.failed(timed_out(self.task_timeout_s)), 0, started, time.perf_counter() - t0)
        try:
            logger.info("Child process PID %d running task %s (Executor: isolated_warm)", child.pid, task.task_id)
            self.events.child_request("warm", 1)
            reply = child.run(TaskMessage.of(task, bundle), deadline, self.task_timeout_s)
        finally:
            pool.release(child)
        if child.tasks_done == 1 and child.start_latency_s is not None:
            self.events.child_started("warm", child.start_latency_s)
        return RunOutcome(reply, child.pid, started, time.perf_counter() - t0)

    def run_chunk(self, tasks: list[Task], bundle: Bundle) -> Iterator[RunOutcome]:
        """A chunk to one warm child in one message, each task's reply streamed back as it finishes
        (`ChildHandle.run_chunk`): one request per chunk instead of one round trip per task. Each task keeps
        its own outcome, PID, timeout (counted from when the child starts it) and failure; a task that
        kills or outlives its child fails as under `run`, and the tasks after it, which never started, go
        to another child as the rest of the chunk. A child's MAX_TASKS recycling splits a chunk."""
        pending = list(tasks)
        pool = self._pool(bundle)
        while pending:
            started = time.time()
            t0 = time.perf_counter()
            deadline = deadline_for(self.task_timeout_s)  # the first task's: waiting for a child included
            child = pool.acquire(deadline)
            if child is None:
                pending.pop(0)
                yield RunOutcome(Reply.failed(timed_out(self.task_timeout_s)), 0, started, time.perf_counter() - t0)
                continue
            room = self.max_tasks_per_process - child.tasks_done if self.max_tasks_per_process else len(pending)
            batch, pending = pending[:max(1, room)], pending[max(1, room):]
            replies = child.run_chunk(ChunkMessage.of(batch, bundle), deadline, self.task_timeout_s)
            self.events.child_request("warm", len(batch))
            try:
                for index, task in enumerate(batch):
                    logger.info("Child process PID %d running task %s (Executor: isolated_warm)", child.pid, task.task_id)
                    reply = next(replies, None)
                    if reply is None:  # the child died or timed out on an earlier task: this one never started
                        pending = batch[index:] + pending
                        break
                    now = time.perf_counter()
                    if child.tasks_done == 1 and child.start_latency_s is not None:
                        self.events.child_started("warm", child.start_latency_s)
                    yield RunOutcome(reply, child.pid, started, now - t0)
                    started, t0 = time.time(), now
            finally:
                replies.close()  # kills the child if replies are left unread (the caller stopped early)
                pool.release(child)

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()

    def child_pids(self) -> list[int]:
        with self._lock:
            pools = list(self._pools.values())
        pids = []
        for pool in pools:
            with pool.cond:
                pids.extend(c.pid for c in pool.idle + list(pool.busy))
        return pids
