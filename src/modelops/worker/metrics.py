"""modelops' own Prometheus metrics, per worker process.

Dask's `/metrics` handler (scheduler and every worker process) writes prometheus_client's default
registry, so metrics registered there appear beside Dask's own. prometheus_client comes with the
`worker` extra (the image installs it); without it Dask's /metrics answers that Prometheus is not
available and these are not collected (`enabled()` says so, `describe()` shows it).
"""

from __future__ import annotations

try:
    import prometheus_client as _prom
except ImportError:  # a client-only install: no metrics to serve
    _prom = None

if _prom is not None:
    TASKS = _prom.Counter(
        "modelops_tasks", "Simulation tasks run on this worker process, by executor, start method and outcome",
        ["executor", "cold_start", "status", "error_kind"],
    )
    TASK_SECONDS = _prom.Histogram(
        "modelops_task_duration_seconds", "Wall time of a task in its executor (child start included)",
        ["executor"], buckets=(0.005, 0.02, 0.1, 0.5, 1, 5, 30, 120, 600, 3600, 14400),
    )
    SPAWN_FALLBACKS = _prom.Counter(
        "modelops_cold_spawn_fallback_tasks",
        "Tasks of a cold-fork worker served by spawn instead (a bundle that cannot be forked safely)",
    )


def enabled() -> bool:
    return _prom is not None


def observe(result, configured_cold_start: str | None) -> None:
    """Count one task result (TaskResult) of this worker."""
    if _prom is None:
        return
    p = result.provenance
    TASKS.labels(p.executor, p.cold_start or "", result.status, result.error.kind if result.error else "").inc()
    TASK_SECONDS.labels(p.executor).observe(p.duration_s)
    if configured_cold_start == "fork" and p.cold_start == "spawn":
        SPAWN_FALLBACKS.inc()
