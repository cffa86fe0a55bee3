"""Scale-down that removes idle pods first: the sidecar keeps each worker pod's
`controller.kubernetes.io/pod-deletion-cost` at the tasks running on it.

    scheduler container                    sidecar container (this module; the pod's only token)
    dask scheduler + preload               python -m modelops.sidecar.deletion_cost
    GET /modelops/pod-costs  <-- loopback --  every second: {pod IP: running tasks}
                                              list the worker pods (IP -> name), patch changed costs
                                              --> Kubernetes API (Role: get, list, patch pods)

When a Deployment scales down (KEDA's HPA, `kubectl scale`, a rollout's old ReplicaSet), the ReplicaSet
controller deletes the pods of lowest deletion cost first (after unscheduled, not running and not ready
ones). Pods without the annotation cost 0. So an idle pod goes before a busy one, and a busy pod goes only
when no idle one is left, through its preStop drain.

Throttled: one pass every `interval` seconds at most, patching only the pods whose cost changed since the
last patch (Kubernetes asks that the annotation not be updated on every metric change). A failing API (no
RBAC, unreachable) is logged once, with the cause and what it means, then retried every `retry_interval`
seconds; its recovery is logged once too. A scheduler not answering (starting, restarting) is waited for,
said once. What the scheduler serves is checked (pod IPs to small non-negative integers) before use: the
scheduler is where clients run code, and the sidecar writes only that one annotation, only on the pods
its selector names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request

from modelops.settings import DELETION_COST_SELECTOR_VARIABLE, ConfigError, setting
from modelops.sidecar.kube_api import DELETION_COST, ApiError, InClusterApi

logger = logging.getLogger("modelops.sidecar.deletion_cost")

INTERVAL_S = 2.0  # at most one pass (and one patch per pod) this often
RETRY_S = 60.0  # after a failing API call, the next try
POLL_S = 1.0  # how often the scheduler's page is read
MAX_COST = 1_000_000  # a pod runs at most its slots: far below this; anything above is not the scheduler's page
POD_COSTS_ROUTE = "/modelops/pod-costs"  # served by modelops.scheduler.pod_costs (the chart writes the full URL)
DEFAULT_SCHEDULER_URL = f"http://127.0.0.1:8787{POD_COSTS_ROUTE}"


class SchedulerUnavailable(Exception):
    """The scheduler's page did not answer, or answered something that is not its pod costs."""


def parse_costs(raw: bytes) -> dict[str, int]:
    """{"pods": {ip: running}} -> {ip: running}; SchedulerUnavailable naming what is wrong otherwise."""
    try:
        pods = json.loads(raw)["pods"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SchedulerUnavailable(f"not a pod-costs page ({type(exc).__name__}: {exc})") from None
    if not isinstance(pods, dict):
        raise SchedulerUnavailable(f"'pods' is a {type(pods).__name__}, not an object")
    for ip, cost in pods.items():
        if not isinstance(ip, str) or type(cost) is not int or not 0 <= cost <= MAX_COST:
            raise SchedulerUnavailable(f"pod {ip!r}: cost {cost!r} is not an integer from 0 to {MAX_COST}")
    return pods


def read_costs(url: str, timeout: float = 5.0) -> dict[str, int]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return parse_costs(reply.read())
    except (urllib.error.URLError, OSError) as exc:
        raise SchedulerUnavailable(f"{url}: {exc}") from None


class DeletionCostKeeper:
    """Writes each pod's cost when it changed, at most every `interval` s; survives a failing API."""

    def __init__(self, api, selector: str, interval: float = INTERVAL_S, retry_interval: float = RETRY_S,
                 clock=time.monotonic):
        self.api, self.selector = api, selector
        self.interval, self.retry_interval, self.clock = interval, retry_interval, clock
        self.written: dict[str, int | None] = {}  # pod name -> its cost as last listed or patched (None: unreadable)
        self.pods: dict[str, str] = {}  # pod IP -> name
        self.unmatched: set[str] = set()  # worker addresses no listed pod had (a worker outside the release)
        self.next_pass = 0.0
        self.failing: str | None = None  # the cause, while the API fails
        self.patches = 0

    def due(self) -> bool:
        return self.clock() >= self.next_pass

    def changes(self, costs: dict[str, int]) -> dict[str, int]:
        """Pod name -> cost for the pods whose cost differs from the one last written (absent = 0)."""
        out = {}
        for ip, cost in costs.items():
            pod = self.pods.get(ip)
            if pod is not None and self.written.get(pod, 0) != cost:  # None (unreadable) differs from any
                out[pod] = cost
        return out

    def sync(self, costs: dict[str, int]) -> dict[str, int]:
        """One pass: refresh the pods when a worker's IP is unknown, patch the changed costs. Returns what was
        patched. Never raises ApiError: a failure is logged once and retried later."""
        now = self.clock()
        if now < self.next_pass:
            return {}
        self.next_pass = now + self.interval
        done: dict[str, int] = {}
        try:
            if any(ip not in self.pods and ip not in self.unmatched for ip in costs):
                found = self.api.pods(self.selector)
                self.pods = {ip: name for ip, (name, _) in found.items()}
                self.unmatched = {ip for ip in costs if ip not in self.pods}
                # what the pods carry now (a previous sidecar may have written it): the base of "changed"
                self.written = {name: cost for name, cost in found.values()}
            for pod, cost in self.changes(costs).items():
                self.api.set_deletion_cost(pod, cost)
                self.written[pod] = cost
                done[pod] = cost
                self.patches += 1
        except ApiError as exc:
            if self.failing is None:
                logger.warning(
                    "Pod deletion cost: the Kubernetes API failed (%s); a scale-down may remove busy worker pods "
                    "before idle ones until it works again (retried every %.0f s; studies carry on)",
                    exc, self.retry_interval)
            self.failing = str(exc)
            self.next_pass = now + self.retry_interval
            return done
        if self.failing is not None:
            logger.info("Pod deletion cost: the Kubernetes API answers again; the costs are kept current")
            self.failing = None
        return done


def run(keeper: DeletionCostKeeper, url: str, poll: float = POLL_S, passes: int | None = None) -> None:
    """Reads the scheduler's page every `poll` s and hands it to the keeper, for ever (or `passes` reads)."""
    waiting: str | None = None
    done = 0
    while passes is None or done < passes:
        done += 1
        try:
            costs = read_costs(url)
        except SchedulerUnavailable as exc:
            if waiting is None:
                logger.info("Pod deletion cost: waiting for the scheduler (%s)", exc)
            waiting = str(exc)
        else:
            if waiting is not None:
                logger.info("Pod deletion cost: the scheduler answers at %s", url)
                waiting = None
            keeper.sync(costs)
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelops-entrypoint deletion-cost",
                                     description="Keep the worker pods' pod-deletion-cost at their running tasks.")
    parser.add_argument("--scheduler-url", default=DEFAULT_SCHEDULER_URL,
                        help="the scheduler's pod-costs page, on the pod's loopback (default: %(default)s)")
    args = parser.parse_args(argv)
    from modelops.worker.logs import configure_logging

    configure_logging()
    try:
        selector = setting(DELETION_COST_SELECTOR_VARIABLE).read(os.environ)
        if not selector:
            raise ConfigError(DELETION_COST_SELECTOR_VARIABLE, "", "a label selector naming the worker pods")
        api = InClusterApi()
    except (ConfigError, ApiError, OSError) as exc:
        print(f"modelops deletion-cost sidecar: not starting: {exc}", file=sys.stderr)
        return 2
    logger.info("Pod deletion cost: keeping %s current on the worker pods %s (namespace %s), from %s",
                DELETION_COST, selector, api.namespace, args.scheduler_url)
    run(DeletionCostKeeper(api, selector), args.scheduler_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
