"""The per-worker runtime the plugin builds and attaches to the Dask worker.

The task bodies (`modelops.worker.task_bodies.run_task` and friends) find it with
`current_runtime` and hand each task to its executor. A worker without a runtime
fails the task with the reason; it never runs the task some other way.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import modelops

from modelops.bundles import Bundle, BundleError, BundleResolver
from modelops.bundles.environments import LOCK_FILE, BundleEnvironments, PreparedEnvironment
from modelops.executors.base import Executor, RunOutcome
from modelops.executors.protocol import Reply
from modelops.failures import Failure
from modelops.tasks import Provenance, Task, TaskError, TaskResult
from modelops.settings import ExecutorType
from modelops.worker import metrics
from modelops.worker.config import RuntimeConfig
from modelops.worker.executor_factory import build_executor

logger = logging.getLogger("modelops.runtime")

PLUGIN_NAME = "modelops"
RESCHEDULE_KINDS = ("signal", "exit", "runtime")


class WorkerRuntime:
    def __init__(self, config: RuntimeConfig, worker_address: str, slots: int):
        self.config = config
        self.worker_address = worker_address
        self.slots = slots
        self.resolver = BundleResolver.for_config(config)
        self.environments = BundleEnvironments(config.bundle_cache_dir, config.package_index_url,
                                               config.bundle_env_max_mb * 1024 * 1024)
        self.executor: Executor = build_executor(config, slots, metrics.executor_events())
        self.closing = False

    @property
    def cold_start(self) -> str | None:
        return self.config.cold_start.value if self.config.executor is ExecutorType.COLD else None

    def execute(self, task: Task, prepared: dict | None = None) -> TaskResult:
        """Run one task on the executor. `prepared`: a memo the tasks of one chunk share,
        so a bundle is looked up (its files stat'ed, its manifest read) and its environment prepared once per
        chunk instead of once per task; the digest check stays per task."""
        resolved = self._prepare(task, prepared)
        if isinstance(resolved, TaskResult):
            return resolved
        bundle, environment = resolved
        return self._finish(task, self.executor.run(task, bundle), bundle, environment)

    def execute_chunk(self, tasks: list[Task], prepared: dict) -> Iterator[TaskResult]:
        """Run consecutive tasks (a chunk: task_bodies.run_chunk), yielding each task's result in order as it
        finishes. Runs of tasks of one bundle go to the executor together (`Executor.run_chunk`: one message
        to a warm child for all of them); each task still has its own digest check, result and metrics.
        Nothing runs before the first `next`; closing the iterator early leaves the rest unrun."""
        start = 0
        while start < len(tasks):
            first = tasks[start]
            resolved = self._prepare(first, prepared)
            if isinstance(resolved, TaskResult):
                yield resolved
                start += 1
                continue
            bundle, environment = resolved
            end = start + 1
            while end < len(tasks) and (tasks[end].bundle, tasks[end].bundle_digest) == (first.bundle, first.bundle_digest):
                end += 1
            group = tasks[start:end]
            later_environment = prepared[first.bundle][1]  # 'built' stays with the task that built it
            outcomes = self.executor.run_chunk(group, bundle)
            try:
                for index, task in enumerate(group):
                    outcome = next(outcomes)
                    yield self._finish(task, outcome, bundle, environment if index == 0 else later_environment)
            finally:
                outcomes.close()
            start = end

    def _prepare(self, task: Task, prepared: dict | None) -> tuple[Bundle, PreparedEnvironment | None] | TaskResult:
        """The task's bundle (digest checked) and environment, or its failed result when the bundle is unusable."""
        started = time.time()
        try:
            if prepared is not None and task.bundle in prepared:
                bundle, environment = prepared[task.bundle]
            else:
                bundle = self.resolver.resolve(task.bundle)
                environment = self._environment(bundle)
                if prepared is not None:  # the chunk's later tasks did not pay for building the environment
                    prepared[task.bundle] = (bundle, environment and dataclasses.replace(environment, built=False))
            if bundle.digest != task.bundle_digest:
                raise BundleError(
                    f"bundle {task.bundle!r} on this worker has digest {bundle.digest}, "
                    f"the task was made for {task.bundle_digest}: the bundle changed mid-study"
                )
        except BundleError as exc:
            outcome = RunOutcome(
                # retryable: an OCI registry that is unreachable, or an artifact not there yet
                Reply.failed(Failure(kind="runtime", type=type(exc).__name__, message=str(exc),
                                     retryable=getattr(exc, "retryable", False))),
                os.getpid(),
                started,
                time.time() - started,
            )
            return self._result(task, outcome, task.bundle_digest)
        if environment is not None:
            bundle = dataclasses.replace(bundle, python=environment.python)
        return bundle, environment

    def _finish(self, task: Task, outcome: RunOutcome, bundle: Bundle,
                environment: PreparedEnvironment | None) -> TaskResult:
        result = self._result(task, outcome, bundle.digest, environment)
        metrics.observe(result, self.cold_start, outcome.memory_peak_bytes)
        logger.debug(
            "Task %s %s on PID %d in %.3f s",
            task.task_id, result.status, result.provenance.pid, result.provenance.duration_s,
        )
        return result

    def _environment(self, bundle: Bundle) -> PreparedEnvironment | None:
        """The bundle's own Python environment (built on first use), None when it has no lock.
        `direct` runs tasks inside the worker, whose packages it cannot swap: such a bundle is refused."""
        if bundle.import_path is None:
            return None  # source `image`: the image's packages by definition
        directory = Path(bundle.import_path)
        if self.config.executor is ExecutorType.DIRECT and (directory / LOCK_FILE).is_file():
            raise BundleError(
                f"bundle {bundle.name!r} carries {LOCK_FILE} (its own Python environment), but "
                f"MODELOPS_EXECUTOR=direct runs tasks inside the worker, on the worker's packages: "
                f"serve it with MODELOPS_EXECUTOR=isolated_warm or cold"
            )
        return self.environments.prepare(bundle.name, directory)

    def _result(self, task: Task, outcome: RunOutcome, digest: str,
                environment: PreparedEnvironment | None = None) -> TaskResult:
        reply = outcome.reply
        ok = reply.ok
        return TaskResult(
            task_id=task.task_id,
            status="ok" if ok else "failed",
            params=dict(task.params),
            seed=task.seed,
            outputs=reply.outputs if ok else None,
            error=None if ok else TaskError(**reply.error),
            provenance=Provenance(
                executor=self.config.executor.value,
                cold_start=outcome.cold_start or self.cold_start,
                worker=self.worker_address,
                worker_group=self.config.worker_group,
                pid=outcome.pid,
                bundle=task.bundle,
                bundle_digest=digest,
                started=outcome.started,
                duration_s=outcome.duration_s,
                environment=environment.provenance() if environment else None,
            ),
        )

    def describe(self) -> dict:
        child_pids = getattr(self.executor, "child_pids", None)
        return {
            "worker": self.worker_address,
            "pid": os.getpid(),
            "executor": self.config.executor.value,
            "cold_start": self.cold_start,
            "worker_group": self.config.worker_group,
            "modelops_version": modelops.__version__,
            "config": self.config.summary(),
            "slots": self.slots,
            "child_pids": child_pids() if child_pids else [],
            # cold fork only: bundles served by spawn instead (threads or RNGs at import), and
            # bundles whose tasks are refused (RNGs at import, MODELOPS_COLD_IMPORT_RNG=refuse)
            "spawn_fallbacks": self._executor_report("spawn_fallbacks"),
            "refused_bundles": self._executor_report("refused_bundles"),
        }

    def _executor_report(self, name: str) -> dict:
        report = getattr(self.executor, name, None)
        return report() if report else {}

    def close(self) -> None:
        self.closing = True
        self.executor.close()
        self.environments.close()  # after the children that used them are gone


# Where the runtime lives: an attribute of the Dask worker, not the plugin object, which
# distributed replaces (tearing the old one down first) whenever the plugin is registered again.
_RUNTIME_ATTR = "_modelops_runtime"
_SETUP_ERROR_ATTR = "_modelops_setup_error"


def attach_runtime(worker, runtime: WorkerRuntime | None, setup_error: str | None = None) -> None:
    setattr(worker, _RUNTIME_ATTR, runtime)
    setattr(worker, _SETUP_ERROR_ATTR, setup_error)


def attached_runtime(worker) -> WorkerRuntime | None:
    return getattr(worker, _RUNTIME_ATTR, None)


def missing_reason(worker) -> str:
    return getattr(worker, _SETUP_ERROR_ATTR, None) or "the modelops plugin is not loaded"


def current_runtime(worker) -> WorkerRuntime:
    runtime = attached_runtime(worker)
    if runtime is None:
        raise RuntimeError(
            f"worker {worker.address} has no modelops runtime ({missing_reason(worker)}); start workers "
            "with `--preload modelops.worker.preload` so their own environment picks the executor"
        )
    return runtime
