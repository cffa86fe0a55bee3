"""Run one simulation call and turn every outcome into a `Reply`.

Runs wherever a task runs: in a child (`child/runner.py`, `child/forked.py`), or in the Dask
worker itself under the direct executor.
"""

from __future__ import annotations

from typing import Any

from modelops.bundles.bundle import Bundle, BundleError
from modelops.executors.protocol import Job, Reply
from modelops.failures import Failure
from modelops.seeding import seed_global_rngs


def check_outputs(outputs: Any) -> None:
    """Outputs are a dict of JSON-able values or bytes; anything else fails the task, loudly."""
    if not isinstance(outputs, dict):
        raise TypeError(f"simulate() must return a dict, got {type(outputs).__name__}")

    def walk(value: Any, path: str) -> None:
        if value is None or isinstance(value, (bool, int, str, bytes)):
            return
        if isinstance(value, float):
            return
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"output {path} has a non-string key {key!r}")
                walk(item, f"{path}.{key}")
            return
        raise TypeError(
            f"output {path} has type {type(value).__name__}: only JSON values and bytes are allowed"
        )

    for key, value in outputs.items():
        walk(value, key)


def failure(kind: str, exc: BaseException, retryable: bool = False) -> Reply:
    return Reply.failed(Failure.from_exception(kind, exc, retryable))  # type: ignore[arg-type]


def run_job(job: Job, bundle: Bundle) -> Reply:
    """Load the entrypoint, seed, call it; a reply with the outputs, or a classified failure."""
    try:
        function = bundle.load_entrypoint(job.entrypoint)
    except BundleError as exc:
        return failure("runtime", exc)
    seed_global_rngs(job.seed)
    try:
        outputs = function(dict(job.params), job.seed)
    except MemoryError as exc:
        return failure("oom", exc, retryable=True)
    except Exception as exc:
        return failure("exception", exc)
    try:
        check_outputs(outputs)
    except TypeError as exc:
        return failure("serialization", exc)
    return Reply.succeeded(outputs)
