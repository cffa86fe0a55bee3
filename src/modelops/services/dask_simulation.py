"""DaskSimulationService: submit simulation tasks to workers that choose their own executor.

It takes a Dask client and nothing else: there is no config to send, and it does not
register the plugin (each worker's preload does; registering it from a client would only
churn it on every worker). It keeps a bounded number of tasks in flight.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable

from distributed import Client, as_completed

import modelops
from modelops.executors.replies import Failure
from modelops.routing import Requirement, check_requirement
from modelops.tasks import Provenance, Task, TaskError, TaskResult
from modelops.worker.runtime import ATTEMPTS, describe_worker, resolve_bundle, run_task

logger = logging.getLogger("modelops.service")

IN_FLIGHT_PER_THREAD = 4
IN_FLIGHT_MIN = 200  # enough to hide the client round trip for ms-long tasks


class DaskSimulationService:
    def __init__(self, client: Client):
        self.client = client
        self._versions_checked = False

    def version_mismatch(self, runtimes: dict[str, dict] | None = None) -> str | None:
        """One message naming every modelops version the workers run that differs from this
        client's, or None. Marks the check done, so `run()` does not report it again."""
        self._versions_checked = True
        runtimes = self.worker_runtime() if runtimes is None else runtimes
        mine = modelops.__version__
        theirs: dict[str, list[str]] = {}
        for address, info in sorted(runtimes.items()):
            version = info.get("modelops_version") or "unknown (older than 0.2)"
            if version != mine:
                theirs.setdefault(version, []).append(address)
        if not theirs:
            return None
        listed = "; ".join(f"{v} on {len(a)} worker(s) ({', '.join(a[:3])}{', ...' if len(a) > 3 else ''})"
                           for v, a in sorted(theirs.items()))
        return (f"modelops version mismatch: this client has {mine}, the cluster runs {listed}. Tasks run "
                f"the workers' code; install the workers' version here (or upgrade the image) to match.")

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

    def total_threads(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(1, sum(w["nthreads"] for w in workers))

    def default_in_flight(self) -> int:
        """Bounded, so a 100,000-task study does not sit in the scheduler's memory at once."""
        return max(IN_FLIGHT_MIN, IN_FLIGHT_PER_THREAD * self.total_threads())

    def submit(self, task: Task, submission: str | None = None, requirement: Requirement | None = None):
        """One task, keyed by its task_id. `submission` names the run whose starts are counted
        (provenance `attempt`); `requirement` restricts it to workers that provide it."""
        return self.client.submit(
            run_task, task.model_dump(mode="json"), submission, key=task.task_id, pure=False,
            resources=requirement.resources() if requirement else None,
        )

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
        if requirement:
            self.check_requirement(requirement)
        if not self._versions_checked and (message := self.version_mismatch()):
            logger.warning(message)
        unique: dict[str, Task] = {}
        for task in tasks:
            unique.setdefault(task.task_id, task)
        pending = iter(unique.values())
        limit = max_in_flight or self.default_in_flight()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(unique), unit="task", desc="tasks")
        results: list[TaskResult] = []
        submission = uuid.uuid4().hex
        self._run(unique, pending, limit, submission, requirement, results, on_result, bar)
        # the scheduler keeps one start count per task of this run: drop them with the run
        self.client.set_metadata([ATTEMPTS, submission], None)
        if bar:
            bar.close()
        return results

    def _run(self, unique, pending, limit, submission, requirement, results, on_result, bar) -> None:
        first = [self.submit(t, submission, requirement) for _, t in zip(range(limit), pending)]
        queue = as_completed(first, with_results=True, raise_errors=False)
        for future, payload in queue:
            if future.status != "finished":
                # an erred future: as_completed(raise_errors=False) gives (type, exception, traceback)
                exc = payload[1] if isinstance(payload, tuple) and len(payload) == 3 else payload
                result = task_error_result(unique[future.key], exc)
            else:
                result = TaskResult.model_validate(payload)
            results.append(result)
            future.release()
            if on_result:
                on_result(result)
            if bar:
                bar.update(1)
            following = next(pending, None)
            if following is not None:
                queue.add(self.submit(following, submission, requirement))


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
