"""Dask preload: `dask worker SCHEDULER --preload modelops.worker.preload`.

distributed swallows exceptions raised by a preload's `dask_setup` (it logs
"Failed to start preload" and the worker goes on taking tasks: a silent
fallback). So this module fails where Dask does not swallow:
- at import, the environment is validated: `dask worker` imports preloads in
  its own process first, and an import error stops it with exit 1;
- in `dask_setup`, a setup failure is raised as a BaseException, which the
  preload manager does not catch, so the worker process fails to start and its
  nanny (or the CLI, without a nanny) exits non-zero.
"""

from __future__ import annotations

import logging

from modelops.worker.config import RuntimeConfig
from modelops.worker.logs import configure_logging

logger = configure_logging()


class WorkerStartupAborted(BaseException):
    """Deliberately not an Exception, so distributed's preload manager cannot swallow it."""


try:
    _IMPORT_CONFIG = RuntimeConfig.from_env()
except Exception as _exc:
    logger.error("modelops: invalid worker environment: %s", _exc)
    raise


async def dask_setup(worker) -> None:
    from distributed import Worker

    from modelops.worker.plugin import ModelOpsWorkerPlugin

    if not isinstance(worker, Worker):
        return  # the nanny runs preloads too; only the worker process runs tasks
    try:
        await worker.plugin_add(ModelOpsWorkerPlugin(), catch_errors=False)
    except Exception as exc:
        logging.getLogger("modelops.preload").error("modelops: worker setup failed, stopping: %s", exc)
        raise WorkerStartupAborted(f"modelops worker setup failed: {exc}") from exc
