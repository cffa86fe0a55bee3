"""Tasks and results: what is sent to a worker and what comes back.

A task's id is a stable hash of what decides its result (bundle digest,
entrypoint, params, seed). It is the Dask key, so two different tasks never
collide and a rerun of the same task is recognised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, create_model, field_validator

from modelops.failures import Failure

Scalar = bool | int | float | str | None

# Seeds handed to simulate() lie in [0, 2**32): numpy's legacy seeding (RandomState,
# np.random.seed) and many simulation frameworks reject anything larger.
SEED_LIMIT = 2**32


def check_seed(name: str, value: int) -> int:
    """A seed in [0, 2**32), or a ValueError naming the field, the value and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name}={value!r} is invalid: allowed an integer in [0, 2**32) (0 to {SEED_LIMIT - 1})")
    return value


# a seed field: check_seed names the field it validates
Seed = Annotated[int, AfterValidator(lambda value, info: check_seed(info.field_name, value))]


class Task(BaseModel):
    model_config = ConfigDict(frozen=True)

    bundle: str
    bundle_digest: str
    entrypoint: str
    params: dict[str, Scalar]
    seed: Seed

    @field_validator("params")
    @classmethod
    def _finite(cls, params: dict[str, Scalar]) -> dict[str, Scalar]:
        for name, value in params.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"param {name!r}={value!r} is not finite")
        return params

    @cached_property
    def task_id(self) -> str:
        """Computed once per task (a study of 10^5 tasks asks for it several times each)."""
        payload = json.dumps(
            [self.bundle_digest, self.entrypoint, self.params, self.seed],
            sort_keys=True,
            separators=(",", ":"),
        )
        return "sim-" + hashlib.sha256(payload.encode()).hexdigest()[:32]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Task:
        """A copy never inherits the cached task_id: an updated field means a different task."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("task_id", None)
        return copy


# Why a task failed. `kind` classifies the cause; `retryable` says if a rerun could help.
# The validated form of `modelops.failures.Failure` (a plain dataclass there, because
# children import it before any task and must stay import-light), built from its fields: the
# same fields, types, defaults and kinds, defined once.
_FAILURE_TYPES = typing.get_type_hints(Failure)
TaskError = create_model(
    "TaskError",
    __module__=__name__,
    **{
        f.name: (_FAILURE_TYPES[f.name], ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(Failure)
    },
)


# The message a worker's task body sends the scheduler, on the worker's batched stream, as it starts a task
# ({"op": ..., "key": Dask key, "tasks": [task id]}); the scheduler's AttemptsPlugin (scheduler/attempts.py)
# counts them into provenance `attempt`.
ATTEMPT_STARTED_OP = "modelops-task-started"


class Provenance(BaseModel):
    executor: str
    cold_start: str | None = None
    worker: str
    worker_group: str
    pid: int
    bundle: str
    bundle_digest: str
    started: float
    duration_s: float
    # How many times a Dask worker started this task in this submission (1 = never restarted): counted
    # on the scheduler, so a task restarted after its worker was lost says 2. None: not submitted
    # through DaskSimulationService (e.g. doctor probes), or a scheduler without modelops' preload.
    attempt: int | None = None
    # The bundle's own Python environment (a requirements.txt beside bundle.json): its lock digest, and
    # whether this task paid for building it (`built`, `build_seconds`). None: the worker's environment.
    environment: dict | None = None
    # Set when this result was not computed for this job but reused from the results store (a task with
    # the same inputs already succeeded there): the job whose run computed it. None: computed here.
    reused_from: str | None = None


class TaskResult(BaseModel):
    task_id: str
    status: Literal["ok", "failed"]
    params: dict[str, Scalar]
    seed: int
    outputs: dict[str, Any] | None = None
    error: TaskError | None = None
    provenance: Provenance

    @property
    def ok(self) -> bool:
        return self.status == "ok"
