"""Waiting for the workers a study requires, which may be scaling from zero.

Connected workers that meet the requirement: nothing to wait for. Otherwise the scheduler's list of the
release's autoscaled groups (modelops.scheduler, from the chart) decides: a requirement none of them meets
fails at once naming them and the groups connected, while one a group meets waits, with a progress line,
until a worker of it connects (an autoscaler is starting its pods). A scheduler that lists
no groups (no modelops preload, a plain `dask scheduler`): the connected workers decide at once, as before.

While it waits, one marker task with the study's requirement is pending on the scheduler: the group's
demand (what the autoscaler reads) is then at least one pod, so a group at zero is scaled up before any
of the study's tasks is submitted; they follow once a worker is there, and raise the demand further.

Mid-study (ServingWatch), the same lines say when no connected worker serves the study any more (the
workers changed executor under it), naming what it started on and what is connected now.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from modelops.routing import (
    NoGroupForRequirement,
    NoWorkerForRequirement,
    Requirement,
    check_requirement,
    describe_executors,
    serving_executors,
    serving_groups,
)

POLL_S = 1.0
SAY_EVERY_S = 10.0
# While results flow, ServingWatch asks the scheduler which workers are connected this rarely; once it waits,
# every POLL_S.
WATCH_EVERY_S = 5.0
# How the waiting and the end of the wait read in a runner's log (`mops jobs status` finds the latest).
WAITING = "waiting for workers of "
READY = "workers ready after "


class WorkersNotReady(TimeoutError):
    """A group of the release could serve the study but none of its workers connected in time."""


def waiting_line(groups: list[str], demand: dict[str, dict]) -> str:
    """`waiting for workers of group cold: 0/4 ready` (ready pods / desired replicas), one part per group."""
    return WAITING + "; ".join(
        f"group {g}: {demand[g]['ready']}/{max(1, demand[g]['desired'])} ready" for g in groups)


def wait_for_workers(service, requirement: Requirement, say: Callable[[str], None],
                     timeout: float | None = None) -> list[str]:
    """Addresses of connected workers meeting `requirement`, once there is one. Raises
    NoWorkerForRequirement (at once: no group of the release meets it, or the scheduler lists no groups
    and no connected worker does) or WorkersNotReady after `timeout` seconds (None: no bound)."""
    try:
        return service.check_requirement(requirement)
    except NoWorkerForRequirement as connected:
        demand = service.group_demand()  # asked only when the connected workers do not serve the study
        if not demand:  # as before groups were known (`mops run` waited for a first worker)
            if not requirement:
                return []
            raise
        try:
            groups = serving_groups(requirement, {g: d["executor"] for g, d in demand.items()})
        except NoGroupForRequirement as exc:
            raise NoGroupForRequirement(f"{exc}; {str(connected).split('; ', 1)[-1]}") from None
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last_line, said_at, marker = None, 0.0, None
    try:
        while True:
            try:
                workers = service.check_requirement(requirement)
            except NoWorkerForRequirement:
                pass
            else:
                if last_line is not None:  # said it waited: say that it stopped (a pod log's last word)
                    say(f"{READY}{time.monotonic() - started:.0f} s: {len(workers)} worker(s) serve the study")
                return workers
            if marker is None:
                marker = service.client.submit(demand_marker, key=f"modelops-wait-{uuid.uuid4().hex}", pure=False,
                                               resources=requirement.resources())
            line = waiting_line(groups, demand)
            if line != last_line or time.monotonic() - said_at >= SAY_EVERY_S:
                say(line)
                last_line, said_at = line, time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                raise WorkersNotReady(f"{line} after {timeout:g} s: no worker of the group connected (is the "
                                      "group's autoscaler running? `kubectl get scaledobject`, `mops demand`)")
            time.sleep(POLL_S)
            demand = service.group_demand()
    finally:
        if marker is not None:
            marker.cancel()


def demand_marker() -> None:
    """The task that stands for a waiting study in its group's demand (it does nothing where it runs)."""


class WorkersGone(NoWorkerForRequirement):
    """Mid-study, no connected worker served the study's requirement for the user's bound (--wait-workers):
    names the requirement, what the study started on, what is connected now and the bound."""


class ServingWatch:
    """Called by the study's stream while it waits for results (DaskSimulationService.stream `watch`): when no
    connected worker serves the study's requirement (a `helm upgrade` moved the workers to another executor,
    a group went away), says what the study waits for, naming what changed, once and then every SAY_EVERY_S;
    says when workers are back; raises WorkersGone after `bound` seconds (None: no bound) of serving nobody.
    Its tasks stay pending on the scheduler meanwhile, restricted to the requirement: none runs elsewhere."""

    def __init__(self, service, requirement: Requirement, started_on: dict[str, list[str]],
                 say: Callable[[str], None], bound: float | None):
        self.service, self.requirement, self.started_on = service, requirement, started_on
        self.say, self.bound = say, bound
        self.waiting_since: float | None = None
        self.said_at: float | None = None
        self.next_check = time.monotonic() + POLL_S
        self.recheck_at = 0.0  # result_arrived's throttle

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.next_check:
            return
        workers = self.service.client.scheduler_info(n_workers=-1)["workers"]
        try:
            serving = check_requirement(self.requirement, workers)
        except NoWorkerForRequirement:
            serving = []
        if serving:
            if self.waiting_since is not None:
                self.say(f"{READY}{now - self.waiting_since:.0f} s: {len(serving)} worker(s) serve the study")
                self.waiting_since = None
            self.next_check = now + WATCH_EVERY_S
            return
        self.next_check = now + POLL_S
        connected = describe_executors(serving_executors(Requirement(), workers))
        if self.waiting_since is None:
            self.waiting_since, self.said_at = now, None
        if self.said_at is None or now - self.said_at >= SAY_EVERY_S:
            self.say(f"{WAITING}{self.wanted()}: 0 ready; the study started on {describe_executors(self.started_on)}; "
                     f"connected now: {connected}")
            self.said_at = now
        if self.bound is not None and now - self.waiting_since >= self.bound:
            raise WorkersGone(
                f"no connected worker served {self.wanted()} for {self.bound:g} s (the bound, --wait-workers): the "
                f"study started on {describe_executors(self.started_on)}, the workers connected now run "
                f"{connected}; its tasks left did not run anywhere else. The results that arrived are kept: run it "
                "again (the same --job, or --resume) once such workers are back")

    def result_arrived(self) -> None:
        """The study got a result. While it was waiting, check again now (at most every POLL_S): once workers
        serve it, the results flow and the stream no longer waits, so without this the wait would never be
        said to be over (and `mops jobs status` would go on showing the waiting line)."""
        if self.waiting_since is not None and time.monotonic() >= self.recheck_at:
            self.recheck_at = time.monotonic() + POLL_S
            self.next_check = 0.0
            self()

    def wanted(self) -> str:
        """`executor cold in group g`, or `any executor`."""
        parts = [f"executor {self.requirement.executor.value}" if self.requirement.executor else "any executor"]
        if self.requirement.group:
            parts.append(f"in group {self.requirement.group}")
        return " ".join(parts)
