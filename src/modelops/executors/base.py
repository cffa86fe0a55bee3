"""The one interface every executor implements, and what a run returns."""

from __future__ import annotations

import logging
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from modelops.bundles import Bundle
from modelops.tasks import Task

logger = logging.getLogger("modelops.executor")


class ExecutorClosed(RuntimeError):
    """Raised by `run` once `close` has begun: the task was not run and can go elsewhere."""


@dataclass
class RunOutcome:
    reply: dict  # {'status': 'ok', 'outputs': ...} or {'status': 'failed', 'error': {...}}
    pid: int
    started: float
    duration_s: float
    cold_start: str | None = None  # how a cold task's process really started, when it differs from config


class Executor(ABC):
    """Runs one task for a bundle. Thread-safe: Dask calls `run` from every worker thread."""

    name: str

    @abstractmethod
    def run(self, task: Task, bundle: Bundle) -> RunOutcome: ...

    def close(self) -> None:
        """Stop every process this executor started."""


def job_message(task: Task, bundle: Bundle) -> dict:
    return {
        "job": {"entrypoint": task.entrypoint, "params": dict(task.params), "seed": task.seed},
        "bundle": bundle,
    }


def death_reply(returncode: int | None, what: str) -> dict:
    """Classify how a child died: by signal (SIGKILL may be the OOM killer: retryable) or exit code."""
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode).name
        return {
            "status": "failed",
            "error": {
                "kind": "signal",
                "type": "ChildKilled",
                "message": f"{what} was killed by {sig}",
                "signal": sig,
                "retryable": sig in ("SIGKILL", "SIGTERM"),
            },
        }
    return {
        "status": "failed",
        "error": {
            "kind": "exit",
            "type": "ChildExited",
            "message": f"{what} exited with code {returncode} before replying",
            "exit_code": returncode,
            "retryable": False,
        },
    }


def timeout_reply(seconds: float) -> dict:
    return {
        "status": "failed",
        "error": {
            "kind": "timeout",
            "type": "TaskTimeout",
            "message": f"task exceeded MODELOPS_TASK_TIMEOUT_SECONDS={seconds:g}; its process group was killed",
            "retryable": False,
        },
    }


def deadline_for(timeout_s: float) -> float | None:
    return time.monotonic() + timeout_s if timeout_s > 0 else None
