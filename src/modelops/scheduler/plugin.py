"""DemandPlugin: the scheduler serves each worker group's demand (modelops.scheduler.demand) three ways,
all computed when asked:

- `GET /modelops/demand` on the scheduler's HTTP server (the dashboard port, 8787): JSON that KEDA's
  `metrics-api` trigger reads with valueLocation `groups.<group>.desired`;
- the gauges `modelops_group_desired_workers{group}` and `modelops_group_ready_workers{group}` on the
  scheduler's `/metrics` (with prometheus_client installed), for KEDA's `prometheus` trigger or dashboards;
- the comm handler `modelops_demand`, which clients (`mops demand`, a study waiting for a group) call
  over the scheduler connection they already have (TLS included).

Registered by the scheduler's preload with the groups the scheduler's own environment lists; adding it
again changes nothing (idempotent: the route, handler and collector are installed once).
"""

from __future__ import annotations

import json

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.http.utils import RequestHandler

from modelops.scheduler.demand import compute, report
from modelops.settings import GroupSpec

PLUGIN_NAME = "modelops-demand"
HANDLER = "modelops_demand"  # the comm handler clients call
ROUTE = "/modelops/demand"


class DemandPlugin(SchedulerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, groups: tuple[GroupSpec, ...]):
        self.groups = tuple(groups)
        self.scheduler = None

    async def start(self, scheduler) -> None:
        if self.scheduler is scheduler:
            return
        self.scheduler = scheduler
        scheduler.handlers[HANDLER] = self.report
        application = getattr(scheduler, "http_application", None)
        if application is not None:
            application.add_handlers(r".*$", [(ROUTE, DemandHandler, {"dask_server": scheduler})])
        _COLLECTOR.plugin = self
        _register_collector()

    def report(self) -> dict:
        """The demand of every group of the release ({"groups": {}} when it lists none)."""
        return report(self.scheduler, self.groups)

    def demand(self):
        return compute(self.scheduler, self.groups)


def plugin_of(scheduler) -> DemandPlugin | None:
    return scheduler.plugins.get(PLUGIN_NAME)


class DemandHandler(RequestHandler):
    def get(self) -> None:
        plugin = plugin_of(self.server)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(plugin.report() if plugin else {"groups": {}}))


class _Collector:
    """prometheus_client collector: the gauges, computed at each scrape from the current plugin."""

    plugin: DemandPlugin | None = None

    def describe(self) -> list:
        return []  # nothing at registration: the scheduler may still be starting

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        desired = GaugeMetricFamily("modelops_group_desired_workers",
                                    "Pods a worker group needs for its not-finished tasks, within its min and max",
                                    labels=["group"])
        ready = GaugeMetricFamily("modelops_group_ready_workers",
                                  "Pods' worth of a worker group's Dask workers connected to the scheduler",
                                  labels=["group"])
        if self.plugin is not None and self.plugin.scheduler is not None:
            for d in self.plugin.demand():
                desired.add_metric([d.name], d.desired)
                ready.add_metric([d.name], d.ready)
        yield desired
        yield ready


_COLLECTOR = _Collector()
_registered = False


def _register_collector() -> None:
    global _registered
    try:
        import prometheus_client
    except ImportError:  # Dask's /metrics says Prometheus is unavailable; the JSON endpoint still serves
        return
    if not _registered:
        prometheus_client.REGISTRY.register(_COLLECTOR)
        _registered = True
