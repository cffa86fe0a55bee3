"""ModelOpsWorkerPlugin: builds the executor from the worker's own environment.

It takes no configuration: a client that registers it sends nothing that could
override the worker's env. `setup()` reads `RuntimeConfig.from_env()` on the worker.
"""

from __future__ import annotations

import logging

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from modelops.worker.config import ExecutorType, RuntimeConfig
from modelops.worker.logs import configure_logging
from modelops.worker.runtime import PLUGIN_NAME, WorkerRuntime

logger = logging.getLogger("modelops.plugin")
_RUNTIME_ATTR = "_modelops_runtime"


class ModelOpsWorkerPlugin(WorkerPlugin):
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.runtime: WorkerRuntime | None = None
        self.setup_error: str | None = None

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
        except Exception as exc:
            self.setup_error = f"{type(exc).__name__}: {exc}"
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
    def _adopt_or_build(worker, config: RuntimeConfig) -> WorkerRuntime:
        """A plugin registered again (e.g. by a client) keeps the running executor when the
        worker's env still asks for the same config, so warm pools and zygotes are not churned."""
        previous: WorkerRuntime | None = getattr(worker, _RUNTIME_ATTR, None)
        if previous is not None and previous.config == config:
            logger.info("Plugin registered again; keeping the running executor")
            return previous
        if previous is not None:
            previous.close()
        runtime = WorkerRuntime(config, worker.address, slots=worker.state.nthreads)
        setattr(worker, _RUNTIME_ATTR, runtime)
        return runtime

    def teardown(self, worker) -> None:
        """Stop every child process, unless the plugin is only being replaced on a live worker."""
        self.runtime = None
        if worker.status in (Status.closing, Status.closing_gracefully, Status.closed, Status.failed):
            runtime = getattr(worker, _RUNTIME_ATTR, None)
            if runtime is not None:
                runtime.close()
                setattr(worker, _RUNTIME_ATTR, None)
