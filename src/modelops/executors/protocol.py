"""The messages between the worker and its children, and how they travel.

Messages are frozen dataclasses, built and read by attribute on both sides, so their shape is
written once, here: `TaskMessage` (worker -> child: a `Job` and its bundle), `Reply` (child or
executor -> worker: a task's outcome), `ChunkMessage` (worker -> warm child: several jobs, one
reply each) and `ZygoteReady` (a cold-fork zygote -> worker, once, after
its imports). They travel as length-prefixed pickles over dedicated descriptors, never stdout, so a
model that prints cannot corrupt the protocol. Import-light: children import this before any task.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import select
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelops.failures import Failure

if TYPE_CHECKING:
    from modelops.bundles.bundle import Bundle
    from modelops.tasks import Task

_HEADER = 8

# cold fork: the zygote's control socket carries FORK_REQUEST bytes (one per spare wanted);
# a forked child answers ACK on its socket as soon as it has read its task
FORK_REQUEST = b"F"
ACK = b"\x01"


@dataclass(frozen=True)
class Job:
    """One task as a process runs it: which function, its parameters and its seed."""

    entrypoint: str
    params: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class TaskMessage:
    """Worker -> child: one job and the bundle it comes from."""

    job: Job
    bundle: Bundle

    @classmethod
    def of(cls, task: Task, bundle: Bundle) -> TaskMessage:
        return cls(Job(task.entrypoint, dict(task.params), task.seed), bundle)


@dataclass(frozen=True)
class ChunkMessage:
    """Worker -> warm child: consecutive jobs of one bundle in one message (a chunk of a study). The child
    runs them in order and sends one `Reply` per job as each finishes, so a chunk costs one request
    instead of one round trip per task, and the worker still sees each task's own outcome."""

    jobs: tuple[Job, ...]
    bundle: Bundle

    @classmethod
    def of(cls, tasks: list[Task], bundle: Bundle) -> ChunkMessage:
        return cls(tuple(Job(t.entrypoint, dict(t.params), t.seed) for t in tasks), bundle)

    def messages(self) -> list[TaskMessage]:
        return [TaskMessage(job, self.bundle) for job in self.jobs]


@dataclass(frozen=True)
class Reply:
    """A task's outcome, from the process that ran it (or from the executor that saw it fail).

    `error` holds the fields of `modelops.failures.Failure` (`TaskError` on the result). A child adds
    its PID and peak resident memory (`max_rss_kb`); the first task of an exec'd child also when the
    child became ready for it (`ready_at`, epoch seconds)."""

    status: Literal["ok", "failed"]
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    pid: int | None = None
    max_rss_kb: int | None = None
    ready_at: float | None = None

    @classmethod
    def succeeded(cls, outputs: dict[str, Any]) -> Reply:
        return cls("ok", outputs=outputs)

    @classmethod
    def failed(cls, failure: Failure) -> Reply:
        return cls("failed", error=failure.error())

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def from_process(self, pid: int, max_rss_kb: int | None = None, ready_at: float | None = None) -> Reply:
        return dataclasses.replace(self, pid=pid, max_rss_kb=max_rss_kb, ready_at=ready_at)


@dataclass(frozen=True)
class ZygoteReady:
    """Zygote -> worker, once, after its imports and the bundle's warm-up (what the worker's fork
    policy decides on: `cold_fork`)."""

    pid: int
    threads: int
    thread_names: list[str]
    import_errors: list[str]
    import_rngs: list[str]
    import_s: float
    warmup_s: float | None = None
    warmup_error: str | None = None


@dataclass(frozen=True)
class ZygoteThreaded:
    """Zygote -> worker: it is no longer single-threaded and refuses every further fork."""

    pid: int
    threads: int
    thread_names: list[str]


def send(fd: int, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(len(payload).to_bytes(_HEADER, "big") + payload)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("no reply before the deadline")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv(fd: int, deadline: float | None = None) -> object:
    """Read one message; EOFError if the peer closed, TimeoutError past `deadline` (monotonic)."""
    size = int.from_bytes(_read_exact(fd, _HEADER, deadline), "big")
    return pickle.loads(_read_exact(fd, size, deadline))
