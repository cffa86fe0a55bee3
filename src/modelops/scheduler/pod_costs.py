"""What each worker pod would lose if it went now: the tasks running on it, served by the scheduler at
`GET /modelops/pod-costs` on its HTTP server (the dashboard port) for the deletion-cost sidecar
(`modelops.sidecar.deletion_cost`), which writes them to the pods' `controller.kubernetes.io/pod-deletion-cost`.

The scheduler knows what runs where but holds no Kubernetes credential: clients may run any code on it
(`Client.run_on_scheduler`), so the token that may patch pods lives in the sidecar container alone, which
runs no Dask code and reads this page over the pod's loopback. The page tells nothing the dashboard does
not already show (worker addresses and their tasks).

A worker process's running tasks are its `processing` tasks, at most its threads (the others wait in its
queue, and a drain hands them back). A pod's cost is the sum over its worker processes, keyed by the
pod's IP: every worker process of a pod has that address.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.http.utils import RequestHandler

from modelops.sidecar.deletion_cost import POD_COSTS_ROUTE

ROUTE = POD_COSTS_ROUTE  # one path for the page and its one reader, the sidecar (which loads no Dask)


def pod_costs(workers: Iterable) -> dict[str, int]:
    """Pod IP -> tasks running on that pod: each worker process's processing tasks, at most its threads."""
    costs: dict[str, int] = {}
    for ws in workers:
        running = min(len(ws.processing), max(int(ws.nthreads or 1), 1))
        costs[ws.host] = costs.get(ws.host, 0) + running
    return costs


class PodCostsHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"pods": pod_costs(self.server.workers.values())}))


class PodCostsPlugin(SchedulerPlugin):
    """Serves ROUTE; registered by the scheduler's preload (idempotent: the route is added once)."""

    name = "modelops-pod-costs"
    idempotent = True

    def __init__(self):
        self.scheduler = None

    async def start(self, scheduler) -> None:
        if self.scheduler is scheduler:
            return
        self.scheduler = scheduler
        application = getattr(scheduler, "http_application", None)
        if application is not None:
            application.add_handlers(r".*$", [(ROUTE, PodCostsHandler, {"dask_server": scheduler})])
