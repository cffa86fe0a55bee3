"""ModelOpsWorkerPlugin: builds the executor from the worker's own environment.

It takes no configuration: a client that registers it sends nothing that could
override the worker's env. `setup()` reads `RuntimeConfig.from_env()` on the worker.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

from modelops.worker.config import ExecutorType, RuntimeConfig
from modelops.worker.logs import configure_logging
from modelops.worker.runtime import PLUGIN_NAME, WorkerRuntime

logger = logging.getLogger("modelops.plugin")


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
            self.runtime = WorkerRuntime(config, worker.address, slots=worker.state.nthreads)
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

    def teardown(self, worker) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
