"""DaskSimulationService: submit simulation tasks to workers that choose their own executor.

It takes a Dask client and nothing else: there is no config to send, and it does not
register the plugin (each worker's preload does; registering it from a client would only
churn it on every worker). It keeps a bounded number of tasks in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import NamedTuple

from distributed import Client, as_completed

from modelops.failures import Failure
from modelops.routing import Requirement, check_requirement
from modelops.tasks import Provenance, Task, TaskError, TaskResult
from modelops.scheduler import PRELOAD
from modelops.worker.task_bodies import describe_worker, resolve_bundle, run_task

logger = logging.getLogger("modelops.service")

IN_FLIGHT_PER_THREAD = 4
IN_FLIGHT_MIN = 200  # enough to hide the client round trip for ms-long tasks


class DaskSimulationService:
    def __init__(self, client: Client):
        self.client = client
        self._versions_checked = False
        self._counts_attempts: bool | None = None  # asked of the scheduler once

    def version_mismatch(self) -> str | None:
        """One line naming what differs between this client's versions and the cluster's (scheduler and
        workers) and whether it matters (services/versions.py); None when nothing differs. Marks the
        check done, so `stream()` does not report it again."""
        from modelops.services.versions import cluster_versions, describe

        self._versions_checked = True
        return describe(*cluster_versions(self.client))

    def worker_runtime(self) -> dict[str, dict]:
        """Each worker's effective executor and config, as read on the worker itself."""
        return self.client.run(describe_worker)

    def resolve_bundle(self, name: str, requirement: Requirement | None = None) -> dict:
        """How the workers see a bundle (digest and default entrypoint); the digest keys the tasks.
        With a requirement, asked of a worker that meets it (where the study's tasks will run)."""
        resources = requirement.resources() if requirement else None
        return self.client.submit(resolve_bundle, name, pure=False, resources=resources).result()

    def check_requirement(self, requirement: Requirement) -> list[str]:
        """Connected workers meeting `requirement`; NoWorkerForRequirement (naming it and the groups
        connected) when there is none, so a study fails at once instead of waiting forever."""
        return check_requirement(requirement, self.client.scheduler_info(n_workers=-1)["workers"])

    def group_demand(self) -> dict[str, dict]:
        """Each worker group of the release as the scheduler lists them ({name: {executor, ready, desired,
        min, max, ...}}, modelops.scheduler.demand); {} when the scheduler lists none or has no modelops
        preload (then only the connected workers say which groups exist)."""
        from modelops.scheduler.plugin import HANDLER

        report = self.client.sync(getattr(self.client.scheduler, HANDLER))
        return (report or {}).get("groups") or {}

    def total_threads(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(1, sum(w["nthreads"] for w in workers))

    def default_in_flight(self) -> int:
        """Bounded, so a 100,000-task study does not sit in the scheduler's memory at once."""
        return max(IN_FLIGHT_MIN, IN_FLIGHT_PER_THREAD * self.total_threads())

    def submit(self, task: Task, requirement: Requirement | None = None, count: bool = False):
        """One task, keyed by its task_id. `count`: its worker reports its start to the scheduler (provenance
        `attempt`; only for a scheduler with the AttemptsPlugin); `requirement` restricts it to workers that
        provide it."""
        return self.client.submit(
            run_task, wire(task), count, key=task.task_id, pure=False,
            resources=requirement.resources() if requirement else None,
        )

    def submit_many(self, tasks: list[Task], requirement: Requirement | None = None, count: bool = False) -> list:
        """Many tasks in one `client.map` (one message to the scheduler, not one per task), each keyed
        by its task_id."""
        return self.client.map(
            run_task, [wire(t) for t in tasks], count=count, key=[t.task_id for t in tasks],
            pure=False, resources=requirement.resources() if requirement else None,
        )

    def counts_attempts(self) -> bool:
        """Whether the scheduler counts starts (modelops' AttemptsPlugin, from the scheduler preload). Without
        it, one warning naming the preload, and provenance `attempt` stays None: workers must then not
        report starts (a stream message the scheduler has no handler for would cost it the worker)."""
        from modelops.scheduler.attempts import HANDLER

        if self._counts_attempts is None:
            self._counts_attempts = self.client.sync(getattr(self.client.scheduler, HANDLER), keys=[]) is not None
            if not self._counts_attempts:
                logger.warning(
                    "The scheduler at %s does not count task starts: it runs without modelops' scheduler preload "
                    "(dask scheduler --preload %s, which the image's entrypoint and `mops run --local` add); "
                    "provenance `attempt` is left empty (None) for this run's results",
                    self.client.scheduler.address, PRELOAD)
        return self._counts_attempts

    def run(
        self,
        tasks: Iterable[Task],
        max_in_flight: int | None = None,
        on_result: Callable[[TaskResult], None] | None = None,
        progress: bool = False,
        requirement: Requirement | None = None,
    ) -> list[TaskResult]:
        """Run tasks with at most `max_in_flight` submitted at once; results in completion order.
        With a `requirement` (executor and/or worker group), tasks run only on workers whose own
        environment provides it (workers joining later included); none connected: an error at once."""
        results: list[TaskResult] = []
        for done in self.stream(tasks, max_in_flight, progress, requirement):
            results.append(done.result)
            if on_result:
                on_result(done.result)
        return results

    def stream(
        self,
        tasks: Iterable[Task],
        max_in_flight: int | None = None,
        progress: bool | int = False,
        requirement: Requirement | None = None,
        count_attempts: bool = True,
    ) -> Iterator[Completed]:
        """Results as they complete, holding only the tasks in flight: a 10^6-task study runs in
        bounded client memory when `tasks` is an iterator and the caller keeps no list of results.

        Tasks go out in batches (one `client.map` each) whenever a quarter of the in-flight bound
        is free; duplicates (same task_id) run once. `progress`: True or the number of tasks
        expected, for a progress bar updated once per completed batch. `count_attempts=False`
        leaves provenance `attempt` None: the worker then skips its two scheduler round trips per
        task that count starts (see the README's throughput table for what they cost)."""
        if requirement:
            self.check_requirement(requirement)
        if not self._versions_checked and (message := self.version_mismatch()):
            logger.warning(message)
        limit = max_in_flight or self.default_in_flight()
        refill = max(1, limit // REFILL_FRACTION)
        count = count_attempts and self.counts_attempts()
        pending = iter(tasks)
        seen: set[str] = set()
        in_flight: dict[str, Task] = {}
        # on this client's loop: without one, as_completed takes the default client's (the last one made in
        # the process), and a future of another client's loop then wakes its waiter late
        queue = as_completed(loop=self.client.loop)

        def top_up() -> None:
            batch = []
            for task in pending:
                if task.task_id in seen:
                    continue
                seen.add(task.task_id)
                in_flight[task.task_id] = task
                batch.append(task)
                if len(in_flight) >= limit:
                    break
            if batch:
                queue.update(self.submit_many(batch, requirement, count))

        bar = _progress_bar(progress)
        try:
            top_up()
            while in_flight:
                futures = self._next_results(queue, min(refill, len(in_flight)))
                finished = {f.key: f for f in futures if f.status == "finished"}
                payloads, starts = self._collect(finished, count)
                batch: list[tuple[TaskResult, dict]] = []
                for future in futures:
                    record = payloads.get(future.key)
                    if record is not None:
                        if count:
                            record["provenance"]["attempt"] = (starts.get(future.key) or {}).get(future.key)
                        batch.append((TaskResult.model_validate(record), record))
                    elif future.status in ("error", "cancelled"):
                        result = task_error_result(in_flight[future.key], _future_exception(future))
                        batch.append((result, result.model_dump(mode="json")))
                    else:  # lost with its worker: the scheduler runs it again; wait for it again
                        queue.add(future)
                        continue
                    del in_flight[future.key]
                    future.release()
                for i, (result, record) in enumerate(batch):
                    yield Completed(result, record, i == len(batch) - 1)
                if bar is not None:
                    bar.update(len(batch))
                if limit - len(in_flight) >= refill:
                    top_up()
        finally:
            if bar is not None:
                bar.close()
            # Future.release() queues its key's release on the client's loop: once this no-op has run
            # there, so have they, and the client holds nothing of the stream's when it ends
            self.client.sync(_nothing)

    def _collect(self, finished: dict, count: bool) -> tuple[dict, dict]:
        """The finished futures' payloads and, with `count`, their starts on record at the scheduler: one
        gather and one count lookup, together (one round trip's wait for both). A future that errs or is
        lost meanwhile has no payload (errors="skip")."""
        if not finished:
            return {}, {}
        from modelops.scheduler.attempts import HANDLER

        async def both():
            gathering = self.client._gather(finished, errors="skip")
            if not count:
                return await gathering, {}
            return await asyncio.gather(gathering, getattr(self.client.scheduler, HANDLER)(keys=list(finished)))

        return self.client.sync(both)

    @staticmethod
    def _next_results(queue, wanted: int) -> list:
        """Completed futures: block for the first, then collect up to `wanted` for at most
        GATHER_WINDOW_S, so results come back in one gather per batch instead of one per task
        (the round trip per result, not the result, is what costs for ms-long tasks)."""
        futures = queue.next_batch(block=True)
        deadline = time.monotonic() + GATHER_WINDOW_S
        while len(futures) < wanted and time.monotonic() < deadline:
            if queue.has_ready():
                futures += queue.next_batch(block=False)
            else:
                time.sleep(GATHER_POLL_S)
        return futures


# Submit again once this fraction of the in-flight bound is free: batches of limit/4 tasks keep
# the workers fed (3/4 of the bound still queued) with one scheduler message per batch.
REFILL_FRACTION = 4
# Results are collected for up to this long (or until a refill's worth is ready) before one gather;
# a result of a long task is never delayed more than this.
GATHER_WINDOW_S = 0.25
GATHER_POLL_S = 0.005


async def _nothing() -> None:
    pass


class Completed(NamedTuple):
    """One finished task: the validated result, and the same as the JSON-mode dict the worker sent
    (what a results file stores, so it is not dumped again)."""

    result: TaskResult
    record: dict
    batch_end: bool  # the last of the results that arrived together: a writer's moment to flush


def wire(task: Task) -> dict:
    """The task as run_task receives it (JSON-mode fields; the worker validates it)."""
    return {"bundle": task.bundle, "bundle_digest": task.bundle_digest, "entrypoint": task.entrypoint,
            "params": task.params, "seed": task.seed}


def _future_exception(future) -> BaseException:
    """Why a future did not finish: its exception, or a cancellation (e.g. the scheduler lost it)."""
    if future.status == "error":
        return future.exception()
    return CancelledError(f"Dask future {future.key} ended {future.status!r} without a result")


def _progress_bar(progress: bool | int):
    if progress is False:
        return None
    from tqdm import tqdm

    total = None if progress is True else int(progress)
    return tqdm(total=total, unit="task", desc="tasks", mininterval=0.5)


def task_error_result(task: Task, exc: BaseException) -> TaskResult:
    """A Dask-level failure (no runtime on the worker, worker lost too often) as a failed result."""
    return TaskResult(
        task_id=task.task_id,
        status="failed",
        params=dict(task.params),
        seed=task.seed,
        error=TaskError(**Failure.from_exception("runtime", exc, retryable=True).error()),
        provenance=Provenance(
            executor="unknown",
            worker="unknown",
            worker_group="unknown",
            pid=0,
            bundle=task.bundle,
            bundle_digest=task.bundle_digest,
            started=0.0,
            duration_s=0.0,
        ),
    )
