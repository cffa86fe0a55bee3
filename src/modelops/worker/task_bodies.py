"""The functions Dask runs on workers for a client: a simulation task, a bundle lookup, a report.

The client pickles these by reference (module and name), so this module is what the client
imports to submit work: it stays light (no executors, no environments, no Prometheus), and
reaches the worker's runtime (`modelops.worker.runtime`) only inside the bodies, on the worker,
where the plugin has already imported it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os

import modelops
from modelops.tasks import Task

logger = logging.getLogger("modelops.runtime")

ATTEMPTS = "modelops-attempts"  # scheduler metadata: {submission: {task_id: starts}}


def start_counting(worker, submission: str, task_id: str) -> concurrent.futures.Future:
    """Count one more start of this task on the scheduler; the future gives the count. The messages
    go out at once, from the worker's event loop, while the task already runs in this thread: two
    blocking scheduler round trips per task would otherwise set the pace of short tasks (issue 15).
    A key runs on one worker at a time, so the read-then-write needs no lock; the submitter clears
    its entry."""

    async def bump() -> int:
        started = await worker.scheduler.get_metadata(keys=[ATTEMPTS, submission, task_id], default=0)
        await worker.scheduler.set_metadata(keys=[ATTEMPTS, submission, task_id], value=started + 1)
        return started + 1

    return asyncio.run_coroutine_threadsafe(bump(), worker.loop.asyncio_loop)


def counted(counting: concurrent.futures.Future | None) -> int | None:
    return counting.result() if counting is not None else None


def run_task(task: dict, submission: str | None = None) -> dict:
    """Dask task body: run one simulation task on this worker's executor. With `submission` (set by
    DaskSimulationService), the result's provenance says how many times the task was started."""
    from distributed import Reschedule, get_worker

    from modelops.executors.base import ExecutorClosed
    from modelops.worker.runtime import RESCHEDULE_KINDS, current_runtime

    worker = get_worker()
    runtime = current_runtime(worker)
    parsed = Task.model_validate(task)
    counting = start_counting(worker, submission, parsed.task_id) if submission else None
    try:
        result = runtime.execute(parsed)
    except ExecutorClosed:
        counted(counting)  # this start is on record before another worker can start the task
        raise Reschedule() from None
    if runtime.closing and not result.ok and result.error.kind in RESCHEDULE_KINDS:
        # the worker is shutting down and killed this task's process: it is not the task's
        # fault, so hand it back to the scheduler instead of reporting a failure
        logger.warning("Worker closing: handing task %s back to the scheduler", result.task_id)
        counted(counting)
        raise Reschedule()
    result.provenance.attempt = counted(counting)
    return result.model_dump(mode="json")


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
