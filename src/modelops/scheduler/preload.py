"""Dask scheduler preload: `dask scheduler --preload modelops.scheduler.preload` (the image's entrypoint
adds it to the `scheduler` role, as it adds the worker's preload).

The release's worker groups are read from the scheduler's own environment (MODELOPS_WORKER_GROUPS, which
the chart writes) at import: an invalid value stops `dask scheduler` before it serves anyone (distributed
swallows exceptions raised in `dask_setup`, not at import), with the error naming the variable. Unset,
the scheduler knows no groups: studies then check their requirement against the connected workers only.

It also serves each worker pod's running tasks (modelops.scheduler.pod_costs) to the pod-deletion-cost
sidecar the chart adds with scheduler.podDeletionCost; the scheduler itself holds no Kubernetes credential.
"""

from __future__ import annotations

import os

from modelops.settings import WORKER_GROUPS_VARIABLE, setting
from modelops.worker.logs import configure_logging

logger = configure_logging()  # Dask configures only distributed.* loggers

GROUPS = setting(WORKER_GROUPS_VARIABLE).read(os.environ)


async def dask_setup(scheduler) -> None:
    from modelops.scheduler.attempts import AttemptsPlugin
    from modelops.scheduler.message_logs import MessageLogPlugin
    from modelops.scheduler.plugin import DemandPlugin
    from modelops.scheduler.pod_costs import PodCostsPlugin

    scheduler.add_plugin(DemandPlugin(GROUPS), idempotent=True)  # the scheduler starts it after its preloads
    scheduler.add_plugin(AttemptsPlugin(), idempotent=True)  # provenance `attempt` (scheduler/attempts.py)
    # the last batches sent to each worker, not every chunk's specs of a study (scheduler/message_logs.py)
    scheduler.add_plugin(MessageLogPlugin(), idempotent=True)
    scheduler.add_plugin(PodCostsPlugin(), idempotent=True)  # for the deletion-cost sidecar (sidecar/)
    logger.info("Worker groups of the release: %s", ", ".join(g.name for g in GROUPS) or "none listed")
