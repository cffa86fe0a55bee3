"""A job's state: its Kubernetes Job and runner pods, and its tasks as the results store counts them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.compute as pc

from modelops.jobs.manifests import STUDY_NAME_ANNOTATION
from modelops.services.worker_wait import READY, WAITING

FINISHED = ("Complete", "Failed")


@dataclass(frozen=True)
class PodInfo:
    name: str
    phase: str
    created: str
    exit_code: int | None = None
    reason: str = ""
    message: str = ""

    def describe(self) -> str:
        text = f"{self.name} {self.phase}"
        if self.exit_code is not None:
            text += f" (exit {self.exit_code}{', ' + self.reason if self.reason else ''})"
        elif self.reason:
            text += f" ({self.reason})"
        return text


@dataclass(frozen=True)
class JobInfo:
    name: str
    study: str
    state: str  # Pending, Running, Suspended, Complete, Failed
    reason: str
    message: str
    created: str
    pods: list[PodInfo] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def job_info(job: dict, pods: list[dict]) -> JobInfo:
    meta, spec, status = job["metadata"], job.get("spec", {}), job.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
    state, cause = "Pending", {}
    for kind in ("Failed", "Complete", "Suspended"):
        if kind in conditions:
            state, cause = kind, conditions[kind]
            break
    else:
        if spec.get("suspend"):
            state = "Suspended"
        elif status.get("active") or status.get("ready"):
            state = "Running"
    return JobInfo(meta["name"], meta.get("annotations", {}).get(STUDY_NAME_ANNOTATION, ""), state,
                   cause.get("reason", ""), cause.get("message", ""), meta.get("creationTimestamp", ""),
                   sorted((pod_info(p) for p in pods), key=lambda p: p.created))


def pod_info(pod: dict) -> PodInfo:
    status = pod.get("status", {})
    exit_code, reason, message = None, status.get("reason", ""), status.get("message", "")
    for container in status.get("containerStatuses", []):
        terminated = container.get("state", {}).get("terminated")
        waiting = container.get("state", {}).get("waiting")
        if terminated:
            exit_code = terminated.get("exitCode")
            reason = terminated.get("reason", reason)
            message = (terminated.get("message") or message).strip()
        elif waiting:
            reason = waiting.get("reason", reason)
            message = waiting.get("message", message)
    return PodInfo(pod["metadata"]["name"], status.get("phase", "Unknown"),
                   pod["metadata"].get("creationTimestamp", ""), exit_code, reason, message)


@dataclass(frozen=True)
class TaskCounts:
    total: int | None  # None: the job has not started (no record in the store yet)
    ok: int
    failed: int
    retryable: int
    reused: int
    by_group: dict  # worker group -> {executor: tasks}
    executor: str | None = None  # the executor the job keeps to, as its record says (None: any, or not recorded)
    groups: tuple = ()  # the worker groups that served it when it first started

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.retryable

    def describe(self) -> str:
        if self.total is None:
            return "no result yet (the runner has not started the study)"
        return (f"{self.done}/{self.total} done: {self.ok} ok ({self.reused} reused), {self.failed + self.retryable} "
                f"failed ({self.retryable} retryable), {self.total - self.done} without a result")


def task_counts(store, job: str) -> TaskCounts:
    record = store.job(job)
    if record is None:
        return TaskCounts(None, 0, 0, 0, 0, {})
    runs_on = {"executor": record.executor, "groups": tuple(record.groups or ())}
    table = store.latest([job], ["task_id", "status", "error_retryable", "reused_from", "executor", "worker_group"])
    ok = pc.equal(table["status"], "ok")
    retryable = pc.and_(pc.invert(ok), pc.fill_null(table["error_retryable"], False))
    by_group: dict = {}
    if table.num_rows:
        for row in table.group_by(["worker_group", "executor"]).aggregate([("task_id", "count")]).to_pylist():
            by_group.setdefault(row["worker_group"], {})[row["executor"]] = row["task_id_count"]
    n_ok, n_retryable = pc.sum(ok).as_py() or 0, pc.sum(retryable).as_py() or 0
    return TaskCounts(record.tasks, n_ok, table.num_rows - n_ok - n_retryable, n_retryable,
                      pc.sum(pc.invert(pc.is_null(table["reused_from"]))).as_py() or 0, by_group, **runs_on)


def runner_waiting(log: str) -> str | None:
    """What a running runner waits for: its log's latest waiting line (`waiting for workers of group cold:
    0/4 ready`), unless the wait ended after it; None when it waits for nothing."""
    for line in reversed(log.splitlines()):
        if WAITING in line:
            return line[line.index(WAITING):].strip()
        if READY in line:
            return None
    return None
