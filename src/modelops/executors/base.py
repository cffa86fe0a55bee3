"""The one interface every executor implements, and what a run returns."""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from modelops.bundles import Bundle
from modelops.executors.protocol import Reply
from modelops.settings import without_credentials
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")


class ExecutorClosed(RuntimeError):
    """Raised by `run` once `close` has begun: the task was not run and can go elsewhere."""


@dataclass
class RunOutcome:
    reply: Reply
    pid: int
    started: float
    duration_s: float
    cold_start: str | None = None  # how a cold task's process really started, when it differs from config

    @property
    def memory_peak_bytes(self) -> int | None:
        """Peak resident memory of the child that ran the task, as it reported (None: no child)."""
        kb = self.reply.max_rss_kb
        return None if kb is None else int(kb) * 1024


class Executor(ABC):
    """Runs one task for a bundle. Thread-safe: Dask calls `run` from every worker thread."""

    name: str

    @abstractmethod
    def run(self, task: Task, bundle: Bundle) -> RunOutcome: ...

    def run_chunk(self, tasks: list[Task], bundle: Bundle) -> Iterator[RunOutcome]:
        """Run consecutive tasks of one bundle (a chunk), yielding each task's outcome in order as it
        finishes. Here: one `run` per task (direct, and cold: one fork per task). The warm executor sends
        the whole chunk to one child in one message. Closing the iterator early leaves the rest unrun."""
        for task in tasks:
            yield self.run(task, bundle)

    def close(self) -> None:
        """Stop every process this executor started."""


def deadline_for(timeout_s: float) -> float | None:
    return time.monotonic() + timeout_s if timeout_s > 0 else None


def remaining(deadline: float | None) -> float | None:
    """Seconds left before `deadline` (never negative); None when there is no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# Native thread pools (BLAS, OpenMP, numexpr) in every child: sized 1 so a task uses the one core
# Dask gave its thread, and so a cold-fork zygote stays single-threaded. Identical for warm, spawn
# and fork children; a variable set in the worker's own environment wins (the operator's choice).
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
)


# Arrow's bundled jemalloc (pyarrow, which pandas >= 3 imports) starts a background purge thread at its first
# allocation: a cold-fork zygote holding it is multi-threaded, may not fork, and its bundle falls back to
# spawn (seen with the Mesa example). Off in every child (purging then happens in the allocating thread);
# a value in the worker's own environment wins.
ALLOCATOR_VARS = {"JE_ARROW_MALLOC_CONF": "background_thread:false"}


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child process (warm, cold spawn, cold-fork zygote): the worker's, without
    the variables that carry registry or package-index credentials (settings.CREDENTIAL_VARIABLES), which
    a bundle's code has no use for. Children write no bytecode: a bundle's files are verified against
    its content digest, which bytecode is not part of, so bytecode in a bundle's directory is never
    trusted (the OCI cache removes any it finds)."""
    env = without_credentials(os.environ if environ is None else environ)
    for var in THREAD_VARS:
        env.setdefault(var, "1")
    for var, value in ALLOCATOR_VARS.items():
        env.setdefault(var, value)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
