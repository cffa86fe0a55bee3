"""The functions Dask runs on workers for a client: a simulation task, a bundle lookup, a report.

The client pickles these by reference (module and name), so this module is what the client
imports to submit work: it stays light (no executors, no environments, no Prometheus), and
reaches the worker's runtime (`modelops.worker.runtime`) only inside the bodies, on the worker,
where the plugin has already imported it.
"""

from __future__ import annotations

import logging
import os
import threading

import modelops
from modelops.tasks import ATTEMPT_STARTED_OP, Task

logger = logging.getLogger("modelops.runtime")


def report_start(worker, task_id: str) -> None:
    """Tell the scheduler this task starts (its AttemptsPlugin counts provenance `attempt`): on the worker's
    batched stream, queued from this task thread onto the worker's event loop before the task runs, so ahead
    of the task's own `task-finished`; no round trip (scheduler/attempts.py). Starts reported by any thread
    while a flush is already queued go with it: one wake-up of the event loop, not one per task."""
    reports = getattr(worker, _REPORTS_ATTR, None)
    if reports is None:
        reports = _StartReports(worker)
        setattr(worker, _REPORTS_ATTR, reports)
    reports.add(worker.get_current_task(), task_id)


_REPORTS_ATTR = "_modelops_start_reports"


class _StartReports:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.lock = threading.Lock()
        self.pending: dict[str, list[str]] = {}  # Dask key -> task ids started, not yet sent
        self.queued = False  # a flush is queued on the event loop

    def add(self, key: str, task_id: str) -> None:
        with self.lock:
            self.pending.setdefault(key, []).append(task_id)
            if self.queued:
                return
            self.queued = True
        self.worker.loop.add_callback(self.flush)

    def flush(self) -> None:  # on the event loop
        with self.lock:
            pending, self.pending, self.queued = self.pending, {}, False
        for key, tasks in pending.items():
            self.worker.batched_send({"op": ATTEMPT_STARTED_OP, "key": key, "tasks": tasks})


class HandBack(Exception):
    """The worker is closing: the task was not run (or its process was killed by the closing), and goes back."""


def _run_one(worker, runtime, task: dict, count: bool) -> dict:
    """One task through the worker's executor, as the JSON-mode result; HandBack when the worker closes."""
    parsed = Task.model_validate(task)
    if count:
        report_start(worker, parsed.task_id)
    return _checked(runtime, lambda: runtime.execute(parsed))


def _checked(runtime, execute) -> dict:
    """The result `execute()` returns, as JSON; HandBack when the executor closed or the closing worker
    killed the task's process (not the task's fault)."""
    from modelops.executors.base import ExecutorClosed
    from modelops.worker.runtime import RESCHEDULE_KINDS

    try:
        result = execute()
    except ExecutorClosed:
        raise HandBack() from None
    if runtime.closing and not result.ok and result.error.kind in RESCHEDULE_KINDS:
        # the worker is shutting down and killed this task's process: it is not the task's
        # fault, so hand it back to the scheduler instead of reporting a failure
        logger.warning("Worker closing: handing task %s back to the scheduler", result.task_id)
        raise HandBack()
    return result.model_dump(mode="json")


def run_task(task: dict, count: bool = False) -> dict:
    """Dask task body: run one simulation task on this worker's executor. With `count` (set by
    DaskSimulationService once the scheduler has modelops' AttemptsPlugin), its start is reported to the
    scheduler, which the client asks for the result's provenance `attempt`."""
    from distributed import Reschedule, get_worker

    from modelops.worker.runtime import current_runtime

    worker = get_worker()
    try:
        return _run_one(worker, current_runtime(worker), task, count)
    except HandBack:
        raise Reschedule() from None


CLOSING = ("closing_gracefully", "closing", "closed", "failed")


def run_chunk(tasks: list[dict], count: bool = False) -> dict:
    """Dask task body: consecutive tasks of one study, each with its own result, failure and start count
    (`WorkerRuntime.execute_chunk`: under cold each task still gets its own forked child; under
    isolated_warm the chunk goes to one warm child in one message and each reply comes back as it ends).

    Returns {"results": [result per task run], "handed_back": i}: tasks[i:] were not run because the
    worker is closing (a drain, SIGTERM) and go back to the client, which submits them again; the results
    of the tasks already run are kept. A chunk closed before any task finished is rescheduled whole."""
    from distributed import Reschedule, get_worker

    from modelops.worker.runtime import current_runtime

    worker = get_worker()
    runtime = current_runtime(worker)
    parsed = [Task.model_validate(task) for task in tasks]
    results: list[dict] = []
    # each bundle looked up once for the chunk; under isolated_warm the chunk goes to one child in one message
    stream = runtime.execute_chunk(parsed, {})
    try:
        for i, task in enumerate(parsed):
            try:
                if runtime.closing or worker.status.value in CLOSING:
                    raise HandBack()
                if count:  # before the task's result is read; a warm child starts it when the previous one ends
                    report_start(worker, task.task_id)
                results.append(_checked(runtime, lambda: next(stream)))
            except HandBack:
                if not results:
                    raise Reschedule() from None
                logger.warning("Worker closing: %d task(s) of a chunk handed back, %d finished", len(tasks) - i, i)
                return {"results": results, "handed_back": i}
    finally:
        stream.close()  # a chunk handed back part-way: its warm child, still running the rest, is killed
    return {"results": results, "handed_back": len(tasks)}


def resolve_bundle(name: str) -> dict:
    """Dask task body: how this worker sees bundle `name` (digest, entrypoint, version)."""
    from distributed import get_worker

    from modelops.worker.runtime import current_runtime

    bundle = current_runtime(get_worker()).resolver.resolve(name)
    return {
        "name": bundle.name,
        "version": bundle.version,
        "entrypoint": bundle.entrypoint,
        "digest": bundle.digest,
        "source": bundle.source,
    }


def describe_worker(dask_worker) -> dict:
    """For `Client.run`: the executor and config this worker really runs, read on the worker."""
    from modelops.worker.runtime import attached_runtime, missing_reason

    runtime = attached_runtime(dask_worker)
    if runtime is None:
        return {
            "worker": dask_worker.address,
            "pid": os.getpid(),
            "executor": None,
            "modelops_version": modelops.__version__,
            "error": missing_reason(dask_worker),
        }
    return runtime.describe()
