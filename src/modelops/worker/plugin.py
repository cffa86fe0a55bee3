"""ModelOpsWorkerPlugin: builds the executor from the worker's own environment.

It takes no configuration: a client that registers it sends nothing that could
override the worker's env. `setup()` reads `RuntimeConfig.from_env()` on the worker.

The preload adds it on every worker; clients do not register it. It is `idempotent` (a
registration through the scheduler is skipped once the scheduler has it), and the runtime
it builds lives on the worker (`runtime.attach_runtime`), not on the plugin object: when
the plugin is registered again anyway, distributed tears the old plugin down before the
new one's `setup()` ends, and tasks running meanwhile must still find the runtime.
"""

from __future__ import annotations

import logging

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from modelops.routing import worker_resources
from modelops.worker import drain
from modelops.settings import ExecutorType
from modelops.worker.config import RuntimeConfig
from modelops.worker.logs import configure_logging
from modelops.worker.runtime import PLUGIN_NAME, WorkerRuntime, attach_runtime, attached_runtime

logger = logging.getLogger("modelops.plugin")


class ModelOpsWorkerPlugin(WorkerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.runtime: WorkerRuntime | None = None
        self.setup_error: str | None = None
        self.drain_file = None

    def __getstate__(self) -> dict:
        # Only the class crosses the wire from a client; never state or config.
        return {"plugin": PLUGIN_NAME}  # non-empty, so __setstate__ runs

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def setup(self, worker) -> None:
        try:
            config = RuntimeConfig.from_env()
            configure_logging(config.log_level.value)
            self.runtime = self._adopt_or_build(worker, config)
            self.drain_file = drain.register(worker)  # for `mops drain` (the pod's preStop hook)
            self._advertise(worker, config)
        except Exception as exc:
            self.setup_error = f"{type(exc).__name__}: {exc}"
            if attached_runtime(worker) is None:
                attach_runtime(worker, None, self.setup_error)
            configure_logging()
            logger.error("modelops worker setup failed: %s", self.setup_error)
            raise
        logger.info("Executor: %s", config.executor.value)
        logger.info("Bundle source: %s", config.bundle_source.value)
        if config.executor is ExecutorType.COLD:
            logger.info("Cold start: %s", config.cold_start.value)
        if config.executor is ExecutorType.DIRECT and config.task_timeout_seconds:
            logger.warning(
                "MODELOPS_TASK_TIMEOUT_SECONDS=%g is not enforced by the direct executor "
                "(tasks run inside the worker process and cannot be killed)",
                config.task_timeout_seconds,
            )
        logger.info("Worker group: %s", config.worker_group)

    @staticmethod
    def _advertise(worker, config: RuntimeConfig) -> None:
        """Advertise this worker's executor and group as Dask resources (routing.py), from its own
        env. Under the preload this runs before the worker registers, so it registers with them."""
        resources = worker_resources(config.executor.value, config.worker_group)
        if all(worker.state.total_resources.get(k) == v for k, v in resources.items()):
            return
        for name, quantity in resources.items():
            worker.state.available_resources[name] = (
                worker.state.available_resources.get(name, 0) + quantity - worker.state.total_resources.get(name, 0)
            )
            worker.state.total_resources[name] = quantity
        if worker.status is Status.running:  # already registered: tell the scheduler too
            worker.loop.add_callback(worker.set_resources, **resources)

    @staticmethod
    def _adopt_or_build(worker, config: RuntimeConfig) -> WorkerRuntime:
        """A plugin registered again (e.g. by a client) keeps the running executor when the
        worker's env still asks for the same config, so warm pools and zygotes are not churned."""
        previous = attached_runtime(worker)
        if previous is not None and previous.config == config:
            logger.info("Plugin registered again; keeping the running executor")
            return previous
        runtime = WorkerRuntime(config, worker.address, slots=worker.state.nthreads)
        attach_runtime(worker, runtime)  # tasks see the new runtime from here on
        if previous is not None:
            previous.close()
        return runtime

    def teardown(self, worker) -> None:
        """Stop every child process, unless the plugin is only being replaced on a live worker
        (then the runtime stays attached to the worker, and running tasks keep using it)."""
        if worker.status in (Status.closing, Status.closing_gracefully, Status.closed, Status.failed):
            drain.unregister(self.drain_file)
            runtime = attached_runtime(worker)
            if runtime is not None:
                runtime.close()
