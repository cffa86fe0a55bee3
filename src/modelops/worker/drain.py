"""Drain: a worker being stopped finishes its running tasks instead of losing them.

`dask worker` answers SIGTERM by closing its nannies with a fixed 10 s timeout, which kills every
running task (distributed 2026.8, `cli/dask_worker.py`); `retire_workers` and `--lifetime` move
stored data away but do not wait for running tasks either. So the drain happens *before* SIGTERM,
from the pod's preStop hook (`mops drain`), against each worker process of the container:

1. the worker's status becomes `closing_gracefully`: the scheduler stops assigning it tasks and the
   worker's state machine stops starting the ones it already holds (distributed pauses it);
2. tasks assigned to it but not started are handed back to the scheduler at once (`reschedule`),
   so other workers run them now instead of after the drain;
3. it waits, up to the deadline, for the running tasks to end and their results to be fetched.

Then the preStop hook returns, the kubelet sends SIGTERM and Dask closes as usual; only a task
still running at the deadline is killed and restarted elsewhere by the scheduler.

Each worker process registers the `modelops_drain` handler and writes its address to
`<tmp>/modelops-workers/<pid>.addr` (the pod's own /tmp), which is how `mops drain` finds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

from distributed.core import Status

logger = logging.getLogger("modelops.drain")

HANDLER = "modelops_drain"
NOT_STARTED = ("waiting", "ready", "constrained")
# After the last running task ends, how long its result may wait for the client to fetch it.
RESULT_FETCH_WAIT_S = 10.0


def address_dir() -> Path:
    return Path(tempfile.gettempdir()) / "modelops-workers"


def register(worker) -> Path:
    """Install the drain handler on this worker process and publish its address for `mops drain`."""

    async def handler(timeout: float) -> dict:
        return await drain(worker, float(timeout))

    worker.handlers[HANDLER] = handler
    directory = address_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.addr"
    path.write_text(worker.address)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _running(worker) -> list:
    return [ts.key for ts in (*worker.state.executing, *worker.state.long_running)]


async def drain(worker, timeout: float) -> dict:
    """Stop taking tasks, hand back the ones not started, wait up to `timeout` s for the rest."""
    t0 = time.monotonic()
    deadline = t0 + max(0.0, timeout)
    if worker.status in (Status.running, Status.paused):
        worker.status = Status.closing_gracefully  # also pauses the state machine: nothing new starts
    stimulus = f"modelops-drain-{time.time()}"
    handed_back = [ts.key for ts in worker.state.tasks.values() if ts.state in NOT_STARTED]
    for key in handed_back:
        # the scheduler releases it here (free-keys) and assigns it to a running worker
        worker.batched_send({"op": "reschedule", "key": key, "stimulus_id": stimulus})
    running = _running(worker)
    logger.info(
        "Draining: %d running task(s) may finish within %.0f s; %d not started handed back to the scheduler",
        len(running), timeout, len(handed_back),
    )
    while _running(worker) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    fetch_deadline = min(deadline, time.monotonic() + RESULT_FETCH_WAIT_S)
    while worker.data and time.monotonic() < fetch_deadline:
        await asyncio.sleep(0.2)
    unfinished = _running(worker)
    waited = time.monotonic() - t0
    if unfinished:
        logger.warning(
            "Drain deadline (%.0f s) reached: %d task(s) still running will be restarted elsewhere: %s",
            timeout, len(unfinished), ", ".join(map(str, unfinished)),
        )
    else:
        logger.info("Drained in %.1f s: %d running task(s) finished", waited, len(running))
    return {
        "worker": worker.address,
        "running_at_start": len(running),
        "handed_back": len(handed_back),
        "unfinished": len(unfinished),
        "waited_s": round(waited, 3),
    }


async def drain_addresses(addresses: list[str], timeout: float) -> list[dict]:
    """Drain these worker processes concurrently (used by `mops drain`)."""
    from distributed.core import rpc
    from distributed.security import Security

    # the pod's own Dask configuration: with the chart's tls.enabled, a client certificate for tls:// workers
    connection_args = Security().get_connection_args("client")

    async def one(address: str) -> dict:
        # timeout: the connect's; the drain itself may be long
        async with rpc(address, timeout=10, connection_args=connection_args) as worker:
            return await getattr(worker, HANDLER)(timeout=timeout)

    outcomes = await asyncio.gather(*(one(a) for a in addresses), return_exceptions=True)
    return [
        out if isinstance(out, dict) else {"worker": addr, "error": f"{type(out).__name__}: {out}"}
        for addr, out in zip(addresses, outcomes)
    ]


def local_addresses() -> list[tuple[Path, str]]:
    directory = address_dir()
    if not directory.is_dir():
        return []
    return [(p, p.read_text().strip()) for p in sorted(directory.glob("*.addr"))]
