"""The one constructor of failure replies, used by every executor, the child, the service and the
task model (`tasks.TaskError`).

A failed task must say everything an operator needs (kind, type, message, traceback, exit code
or signal, retryable) in the same shape wherever it was detected; building these dicts by hand
in many places let fields drift. Import-light: children import it before any task runs.
"""

from __future__ import annotations

import signal as _signal
import traceback as _traceback
from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["exception", "exit", "signal", "timeout", "oom", "serialization", "runtime"]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Failure:
    """Why a task failed. `kind` classifies the cause; `retryable` says whether a rerun could help."""

    kind: Kind
    type: str
    message: str
    traceback: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    retryable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"failure kind={self.kind!r} is invalid: allowed one of {', '.join(KINDS)}")
        if not self.type or not isinstance(self.type, str):
            raise ValueError(f"failure type={self.type!r} is invalid: allowed a non-empty string")

    @classmethod
    def from_exception(cls, kind: Kind, exc: BaseException, retryable: bool = False) -> Failure:
        return cls(
            kind=kind,
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(_traceback.format_exception(exc)),
            retryable=retryable,
        )

    def error(self) -> dict:
        """The `error` mapping of a result (the fields of `modelops.tasks.TaskError`)."""
        return asdict(self)


def died(returncode: int | None, what: str, traceback: str | None = None) -> Failure:
    """How a child died: by a signal (SIGKILL may be the OOM killer: retryable) or an exit code.

    `traceback` is what the child's faulthandler wrote when a fatal signal hit Python code."""
    if returncode is not None and returncode < 0:
        name = _signal.Signals(-returncode).name
        how = dict(kind="signal", type="ChildKilled", message=f"{what} was killed by {name}", signal=name,
                   retryable=name in ("SIGKILL", "SIGTERM"))
    else:
        how = dict(kind="exit", type="ChildExited", message=f"{what} exited with code {returncode} before replying",
                   exit_code=returncode)
    return Failure(traceback=traceback or None, **how)


def timed_out(seconds: float, what: str = "task") -> Failure:
    return Failure(
        kind="timeout",
        type="TaskTimeout",
        message=(
            f"{what} exceeded MODELOPS_TASK_TIMEOUT_SECONDS={seconds:g} (the whole task, including "
            "waiting for a process); its process group was killed"
        ),
    )
