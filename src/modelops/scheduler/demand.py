"""The pods each worker group needs, from the scheduler's own tasks: what an autoscaler (KEDA's
`metrics-api` trigger) scales a group by.

A group's demand is the tasks that can run only on it, waiting, queued, processing or without a worker:
tasks requiring the group (with no executor, or the group's), tasks requiring only its executor (every
group of that executor counts them: any of them may serve them), and, for the main group `default`, tasks
with no requirement. Desired replicas are ceil(tasks / slots per pod), within the group's min and max.

Computed on demand (a poll every pollingInterval, a Prometheus scrape), not kept current through
every transition: one pass over the scheduler's tasks, counting by requirement first, so the per-task
cost is a state test and a dict increment (see `mops demand`, and docs/operations.md for the measured cost).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass

from distributed.core import Status

from modelops.routing import group_serves, provided
from modelops.settings import GroupSpec

DEFAULT_GROUP = "default"  # the chart's main group (worker.*): tasks without a requirement count for it
PENDING_STATES = frozenset({"waiting", "queued", "processing", "no-worker"})


@dataclass(frozen=True)
class GroupDemand:
    name: str
    executor: str
    tasks: int  # tasks only this group (or its executor) may run, not finished
    workers: int  # Dask worker processes of the group connected and running
    ready: int  # pods' worth of them: workers // nworkers
    desired: int  # replicas: ceil(tasks / slots), within min and max (0 for a group no autoscaler scales)
    slots: int  # nworkers x nthreads: tasks one pod runs at once
    min: int
    max: int
    autoscaled: bool


def counts_for(group: GroupSpec, executor: str | None, name: str | None) -> bool:
    """Whether a pending task requiring (executor, group name) counts for `group`'s demand; one with no
    requirement counts for the main group only (any group could run it, one group scales for it)."""
    if executor is None and name is None:
        return group.name == DEFAULT_GROUP
    return group_serves(group.name, group.executor.value, executor, name)


def desired_replicas(tasks: int, group: GroupSpec) -> int:
    return min(group.max, max(group.min, math.ceil(tasks / group.slots)))


def pending_by_requirement(tasks) -> Counter:
    """Not-finished tasks counted by their resource restrictions' names (a tuple; () for none)."""
    counts: Counter = Counter()
    for ts in tasks:
        if ts.state in PENDING_STATES:
            counts[tuple(ts.resource_restrictions or ())] += 1
    return counts


def compute(scheduler, groups: tuple[GroupSpec, ...]) -> list[GroupDemand]:
    """Each group's demand from `scheduler`'s tasks and workers (run on the scheduler's event loop)."""
    pending = [(provided(dict.fromkeys(key)), n) for key, n in pending_by_requirement(scheduler.tasks.values()).items()]
    connected: Counter = Counter()
    for ws in scheduler.workers.values():
        if ws.status == Status.running:
            connected[provided(ws.resources or {})[1]] += 1
    out = []
    for g in groups:
        tasks = sum(n for (executor, name), n in pending if counts_for(g, executor, name))
        out.append(GroupDemand(g.name, g.executor.value, tasks, connected[g.name], connected[g.name] // g.nworkers,
                               desired_replicas(tasks, g), g.slots, g.min, g.max, g.autoscaled))
    return out


def report(scheduler, groups: tuple[GroupSpec, ...]) -> dict:
    """The JSON the scheduler serves: {"groups": {name: GroupDemand fields}, "cpu_seconds": what computing it
    cost the scheduler's event loop thread}. KEDA's metrics-api trigger reads one group with valueLocation
    `groups.<name>.desired`."""
    started = time.thread_time()
    demand = compute(scheduler, groups)
    return {"groups": {d.name: asdict(d) for d in demand}, "cpu_seconds": round(time.thread_time() - started, 6)}
