"""Scale-down that removes idle pods first: the scheduler keeps each worker pod's
`controller.kubernetes.io/pod-deletion-cost` at the number of tasks running on it.

When a Deployment scales down (KEDA's HPA, `kubectl scale`, a rollout's old ReplicaSet), the ReplicaSet
controller deletes the pods of lowest deletion cost first (after unscheduled, not running and not ready
ones). Pods without the annotation cost 0. So an idle pod (cost 0) goes before a busy one, and a busy pod
goes only when no idle one is left, through its preStop drain.

The scheduler knows what runs where (it runs no bundle code): a worker process's running tasks are its
`processing` tasks, at most its threads (the others wait in its queue and a drain hands them back). A pod's
cost is the sum over its worker processes, found by address: every worker process of a pod has the pod's
IP, and the pods come from a list of the release's worker pods (the label selector the chart writes into
MODELOPS_POD_DELETION_COST_SELECTOR).

Throttled: one pass every `interval` seconds at most, patching only the pods whose cost changed since
the last patch (Kubernetes asks that the annotation not be updated on every metric change). The calls to
the API server run in a thread, never on the scheduler's event loop. A failing API (no RBAC, unreachable,
no token) is logged once, with the cause and what it means, then retried quietly every `retry_interval`
seconds; its recovery is logged once too. The scheduler goes on either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("modelops.scheduler.deletion_cost")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
INTERVAL_S = 2.0  # at most one pass (and one patch per pod) this often
RETRY_S = 60.0  # after a failing API call, the next try


class ApiError(Exception):
    """The Kubernetes API could not be used: the message says why."""


def pod_costs(workers: Iterable) -> dict[str, int]:
    """Pod IP -> tasks running on that pod: each worker process's processing tasks, at most its threads."""
    costs: dict[str, int] = {}
    for ws in workers:
        running = min(len(ws.processing), max(int(ws.nthreads or 1), 1))
        costs[ws.host] = costs.get(ws.host, 0) + running
    return costs


class InClusterApi:
    """The few calls the scheduler makes, with its pod's ServiceAccount token (standard library only)."""

    def __init__(self, root: Path = SERVICE_ACCOUNT, host: str | None = None, timeout: float = 10.0):
        token_file = root / "token"
        if not token_file.is_file():
            raise ApiError(f"no ServiceAccount token at {token_file} (the pod mounts none)")
        self.token_file = token_file
        self.namespace = (root / "namespace").read_text().strip()
        if host is None:
            h, p = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            host = f"https://{'[' + h + ']' if h and ':' in h else h}:{p}" if h else "https://kubernetes.default.svc"
        self.host = host
        self.timeout = timeout
        ca = root / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)

    def _call(self, method: str, path: str, body: dict | None = None, content_type: str = "") -> dict:
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.host + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read()).get("message", "")
            except Exception:  # noqa: BLE001 - the status says enough
                pass
            raise ApiError(f"{method} {path}: HTTP {exc.code} {exc.reason}{': ' + detail if detail else ''}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(f"{method} {path}: {exc}") from None

    def pods(self, selector: str) -> dict[str, tuple[str, int]]:
        """Pod IP -> (name, its deletion cost now) of the running pods `selector` names."""
        query = urllib.parse.urlencode({"labelSelector": selector})
        pods = self._call("GET", f"/api/v1/namespaces/{self.namespace}/pods?{query}")
        out = {}
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            ip = pod.get("status", {}).get("podIP")
            if ip and not pod.get("spec", {}).get("hostNetwork") and not meta.get("deletionTimestamp"):
                try:
                    cost = int((meta.get("annotations") or {}).get(ANNOTATION, 0))
                except ValueError:
                    cost = None  # not ours to keep as is: rewritten at the next change
                out[ip] = (meta["name"], cost)
        return out

    def set_cost(self, pod: str, cost: int) -> None:
        self._call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
                   {"metadata": {"annotations": {ANNOTATION: str(cost)}}}, "application/merge-patch+json")


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
        """One pass (blocking: run it in a thread): refresh the pods when a worker's IP is unknown, patch the
        changed costs. Returns what was patched. Never raises: a failure is logged once and retried later."""
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
                # what the pods carry now (a previous scheduler may have written it): the base of "changed"
                self.written = {name: cost for name, cost in found.values()}
            for pod, cost in self.changes(costs).items():
                self.api.set_cost(pod, cost)
                self.written[pod] = cost
                done[pod] = cost
                self.patches += 1
        except ApiError as exc:
            if self.failing is None:
                logger.warning(
                    "Pod deletion cost: the Kubernetes API failed (%s); a scale-down may remove busy worker pods "
                    "before idle ones until it works again (retried every %.0f s; the scheduler carries on)",
                    exc, self.retry_interval)
            self.failing = str(exc)
            self.next_pass = now + self.retry_interval
            return done
        if self.failing is not None:
            logger.info("Pod deletion cost: the Kubernetes API answers again; the costs are kept current")
            self.failing = None
        return done


class DeletionCostTask:
    """Runs the keeper on the scheduler's event loop: compute costs there (cheap), call the API in a thread."""

    def __init__(self, scheduler, keeper: DeletionCostKeeper):
        self.scheduler, self.keeper = scheduler, keeper
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="modelops-deletion-cost")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, min(self.keeper.interval, 1.0)))
            if not self.keeper.due():
                continue
            costs = pod_costs(self.scheduler.workers.values())
            try:
                await asyncio.to_thread(self.keeper.sync, costs)
            except Exception:  # noqa: BLE001 - a bug here must not stop the scheduler
                logger.exception("Pod deletion cost: unexpected error; the scheduler carries on")
                self.keeper.next_pass = self.keeper.clock() + self.keeper.retry_interval

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None


class DeletionCostPlugin(SchedulerPlugin):
    """Registered by the scheduler's preload when MODELOPS_POD_DELETION_COST_SELECTOR is set."""

    name = "modelops-deletion-cost"
    idempotent = True

    def __init__(self, selector: str):
        self.selector = selector
        self.task: DeletionCostTask | None = None

    async def start(self, scheduler) -> None:
        if self.task is None:
            self.task = start(scheduler, self.selector)

    async def close(self) -> None:
        if self.task is not None:
            await self.task.stop()
            self.task = None


def start(scheduler, selector: str) -> DeletionCostTask | None:
    """Starts keeping the costs of the pods `selector` names; None (logged once) when no API is at hand."""
    try:
        api = InClusterApi()
    except (ApiError, OSError) as exc:
        logger.warning("Pod deletion cost: off, the Kubernetes API is not usable (%s); a scale-down may remove "
                       "busy worker pods before idle ones", exc)
        return None
    task = DeletionCostTask(scheduler, DeletionCostKeeper(api, selector))
    task.start()
    logger.info("Pod deletion cost: keeping %s current on the worker pods %s (namespace %s)", ANNOTATION, selector,
                api.namespace)
    return task
