"""DaskSimulationService: submit simulation tasks to workers that choose their own executor.

It takes a Dask client and nothing else: there is no config to send, and it does not
register the plugin (each worker's preload does; registering it from a client would only
churn it on every worker). It keeps a bounded number of tasks in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import NamedTuple

from distributed import Client, as_completed

from modelops.failures import Failure
from modelops.routing import Requirement, check_requirement
from modelops.tasks import Provenance, Task, TaskError, TaskResult
from modelops.scheduler import PRELOAD
from modelops.scheduler.message_logs import bound_message_log
from modelops.worker.task_bodies import describe_worker, resolve_bundle, run_chunk, run_task

logger = logging.getLogger("modelops.service")

IN_FLIGHT_PER_THREAD = 4
IN_FLIGHT_MIN = 200  # enough to hide the client round trip for ms-long tasks
# Chunks multiply the tasks in flight, up to this many (what the client holds as tasks and as a refill's
# results, and the scheduler as the chunks' specs): seconds of the client's own work at the few thousand
# tasks/s it sustains, far more than hides a round trip. Without it, 10,000-task chunks of microsecond tasks
# put 80,000 tasks in flight on 2 threads (~300 MiB in the client; bench/README.md, a million tasks).
IN_FLIGHT_CHUNKED_MAX = 16_000


def in_flight_bound(threads: int, chunk_size: int = 1) -> int:
    """Tasks submitted at once by default: enough to keep every thread busy, bounded so that a 100,000-task
    study does not sit in the scheduler's memory; with chunks, that many Dask tasks' worth of tasks, up to
    IN_FLIGHT_CHUNKED_MAX (never below the unchunked bound)."""
    per_thread = IN_FLIGHT_PER_THREAD * threads
    return max(IN_FLIGHT_MIN, per_thread, min(IN_FLIGHT_CHUNKED_MAX, per_thread * chunk_size))


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
        return in_flight_bound(self.total_threads())

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

    def submit_chunks(self, chunks: list[list[Task]], requirement: Requirement | None = None,
                      count: bool = False) -> list:
        """Chunks of consecutive tasks, one Dask task each (`run_chunk`), in one `client.map`."""
        return self.client.map(
            run_chunk, [[wire(t) for t in chunk] for chunk in chunks], count=count,
            key=[f"{CHUNK_KEY_PREFIX}{uuid.uuid4().hex}" for _ in chunks],
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
        chunk_size: int | None = None,
    ) -> list[TaskResult]:
        """Run tasks with at most `max_in_flight` submitted at once; results in completion order.
        With a `requirement` (executor and/or worker group), tasks run only on workers whose own
        environment provides it (workers joining later included); none connected: an error at once."""
        results: list[TaskResult] = []
        for done in self.stream(tasks, max_in_flight, progress, requirement, chunk_size=chunk_size):
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
        chunk_size: int | None = None,
        expected: int | None = None,
        watch: Callable[[], None] | None = None,
        distinct: bool = False,
    ) -> Iterator[Completed]:
        """Results as they complete, holding only the tasks in flight: a 10^6-task study runs in
        bounded client memory when `tasks` is an iterator and the caller keeps no list of results.

        Tasks go out in batches (one `client.map` each) whenever a quarter of the in-flight bound
        is free; duplicates (same task_id) run once. Short tasks go several to a Dask task (a chunk,
        `run_chunk`): `chunk_size` None sizes chunks from the durations measured so far (ChunkSizer: a
        first wave one task per Dask task, then ~CHUNK_TARGET_S of work per chunk); 1 is one task per Dask
        task throughout; N fixes it. Every task still has its own result, seed, provenance and failure.
        `expected`: how many tasks `tasks` yields (default: `progress` when it is a number), so the last
        chunks stay small enough to keep every thread busy. `progress`: True or the number of tasks
        expected, for a progress bar updated once per completed batch. `count_attempts=False` leaves
        provenance `attempt` None (no start reports, no count lookup per batch). `watch`: called about every
        WATCH_POLL_S while no result is ready (worker_wait.ServingWatch: says when no worker serves the
        requirement, and may raise to end the stream); with it, no connected worker for `requirement` at the
        start is the watch's to report, not an error at once. `distinct`: the caller vouches that `tasks`
        holds each task id once (`Study.iter_tasks` does), so no set of the ids seen is kept and the client's
        memory does not grow with the number of tasks; without it, a task id seen before is skipped."""
        if chunk_size is not None:
            check_chunk_size(chunk_size)
        if requirement and watch is None:
            self.check_requirement(requirement)
        if not self._versions_checked and (message := self.version_mismatch()):
            logger.warning(message)
        count = count_attempts and self.counts_attempts()
        if self.client.scheduler_comm is not None:  # its log would keep every refill's graph (message_logs.py)
            bound_message_log(self.client.scheduler_comm)
        threads = self.total_threads()
        sizer = ChunkSizer(chunk_size, threads)
        if expected is None and progress is not True and progress is not False:
            expected = int(progress)
        pending = iter(tasks)
        returned: deque[Task] = deque()  # handed back by a closing worker: they go out first
        carried: dict[str, int] = {}  # starts a handed-back task already had under its former chunk's key
        seen: set[str] | None = None if distinct else set()  # ~0.1 KiB a task: only for unvouched tasks
        in_flight: dict[str, list[Task]] = {}  # Dask key -> its tasks (one, or a chunk's)
        state = {"tasks": 0, "taken": 0}  # tasks in flight; tasks taken from `pending`
        # on this client's loop: without one, as_completed takes the default client's (the last one made in
        # the process), and a future of another client's loop then wakes its waiter late
        queue = as_completed(loop=self.client.loop)

        # chunks small enough that two per thread fit in the bound on tasks in flight
        chunk_bound = max_in_flight or max(IN_FLIGHT_CHUNKED_MAX, IN_FLIGHT_PER_THREAD * threads)

        def limit_now(size: int) -> int:
            return max_in_flight or in_flight_bound(threads, size)

        def next_task() -> Task | None:
            if returned:
                return returned.popleft()
            for task in pending:
                state["taken"] += 1
                if seen is None:
                    return task
                if task.task_id not in seen:
                    seen.add(task.task_id)
                    return task
            return None

        def top_up() -> None:
            remaining = None if expected is None else max(0, expected - state["taken"]) + len(returned)
            size = sizer.size(remaining, chunk_bound)
            room = limit_now(size) - state["tasks"]
            if not sizer.measured:  # the first wave, one task per Dask task, measures how long tasks take
                room = min(room, PROBE_PER_THREAD * threads - state["tasks"])
            batch: list[Task] = []
            while len(batch) < room and (task := next_task()) is not None:
                batch.append(task)
            if not batch:
                return
            state["tasks"] += len(batch)
            if size == 1:
                futures = self.submit_many(batch, requirement, count)
                in_flight.update((t.task_id, [t]) for t in batch)
            else:
                chunks = [batch[i:i + size] for i in range(0, len(batch), size)]
                futures = self.submit_chunks(chunks, requirement, count)
                in_flight.update((f.key, chunk) for f, chunk in zip(futures, chunks))
            queue.update(futures)

        bar = _progress_bar(progress)
        try:
            top_up()
            while in_flight:
                size = sizer.size(None, chunk_bound)  # a refill's worth of results, in Dask tasks
                # ... or, in the first wave, the first results: they size the rest, which then goes out at once
                wanted = math.ceil(limit_now(size) // REFILL_FRACTION / size) if sizer.measured else 1
                futures = self._next_results(queue, max(1, min(wanted, len(in_flight))), watch)
                finished = {f.key: f for f in futures if f.status == "finished"}
                payloads, starts = self._collect(finished, count)
                batch: list[tuple[TaskResult, dict]] = []
                for future in futures:
                    chunk = in_flight[future.key]
                    payload = payloads.get(future.key)
                    if payload is not None:
                        chunked = future.key.startswith(CHUNK_KEY_PREFIX)
                        records = payload["results"] if chunked else [payload]
                        back = chunk[payload["handed_back"]:] if chunked else []
                    elif future.status in ("error", "cancelled"):
                        exc = _future_exception(future)
                        records = [task_error_result(t, exc).model_dump(mode="json") for t in chunk]
                        back = []
                    else:  # lost with its worker: the scheduler runs it again; wait for it again
                        queue.add(future)
                        continue
                    counted = starts.get(future.key) or {}
                    for record in records:
                        task_id = record["task_id"]
                        before = carried.pop(task_id, 0)
                        if count and payload is not None:
                            record["provenance"]["attempt"] = (counted.get(task_id, 0) + before) or None
                        result = TaskResult.model_validate(record)
                        sizer.observe(result)
                        batch.append((result, record))
                    for task in back:  # the worker closed before running them: they go out again
                        carried[task.task_id] = carried.get(task.task_id, 0) + counted.get(task.task_id, 0)
                        returned.append(task)
                    del in_flight[future.key]
                    state["tasks"] -= len(chunk)
                    future.release()
                for i, (result, record) in enumerate(batch):
                    yield Completed(result, record, i == len(batch) - 1)
                if bar is not None:
                    bar.update(len(batch))
                limit = limit_now(sizer.size(None, chunk_bound))
                if limit - state["tasks"] >= limit // REFILL_FRACTION or returned or not in_flight:
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
    def _next_results(queue, wanted: int, watch: Callable[[], None] | None = None) -> list:
        """Completed futures: block for the first (calling `watch` about every WATCH_POLL_S meanwhile), then
        collect up to `wanted` for at most GATHER_WINDOW_S, so results come back in one gather per batch
        instead of one per task (the round trip per result, not the result, is what costs for ms-long tasks)."""
        if watch is not None:
            while not queue.has_ready():
                watch()
                with queue.thread_condition:  # as_completed notifies it when a future completes
                    queue.thread_condition.wait(timeout=WATCH_POLL_S)
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
# While no result is ready, a stream's `watch` is called this often.
WATCH_POLL_S = 0.2


# Chunks of short tasks (run_chunk): the work one Dask task aims at once durations are known (tasks that
# long or longer go one per Dask task, keeping Dask's load balancing), the most tasks in one, and the first
# wave (this many tasks per thread, one per Dask task) that measures them.
CHUNK_TARGET_S = 0.15
CHUNK_MAX = 10_000
PROBE_PER_THREAD = 2
# Near a study's end chunks shrink so that what is left still makes this many chunks per thread.
CHUNKS_PER_THREAD = 4
CHUNK_KEY_PREFIX = "modelops-chunk-"


def check_chunk_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= CHUNK_MAX:
        raise ValueError(f"chunk size {size!r}: give a whole number from 1 to {CHUNK_MAX} (1: one task per Dask "
                         "task), or none to size chunks from measured task durations")
    return size


class ChunkSizer:
    """How many consecutive tasks one Dask task runs: `fixed`, or ~CHUNK_TARGET_S of work by the durations
    measured so far (a running mean of provenance `duration_s`), 1 until one is known. With `remaining`
    known, small enough that the rest makes CHUNKS_PER_THREAD chunks per thread; with a `bound` on tasks in
    flight, small enough that two chunks per thread fit in it."""

    def __init__(self, fixed: int | None, threads: int):
        self.fixed, self.threads = fixed, max(1, threads)
        self.per_task_s: float | None = None

    @property
    def measured(self) -> bool:
        return self.fixed is not None or self.per_task_s is not None

    def observe(self, result: TaskResult) -> None:
        if self.fixed is None and result.provenance.executor != "unknown":  # not a Dask-level failure
            d = max(result.provenance.duration_s, 1e-6)
            self.per_task_s = d if self.per_task_s is None else 0.8 * self.per_task_s + 0.2 * d

    def size(self, remaining: int | None = None, bound: int | None = None) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.per_task_s is None:
            return 1
        n = int(CHUNK_TARGET_S / self.per_task_s)
        if remaining is not None:
            n = min(n, math.ceil(remaining / (self.threads * CHUNKS_PER_THREAD)))
        if bound is not None:
            n = min(n, bound // (2 * self.threads))
        return max(1, min(CHUNK_MAX, n))


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
