"""modelops' own Prometheus metrics, per worker process.

Dask's `/metrics` handler (scheduler and every worker process) writes prometheus_client's default
registry, so metrics registered there appear beside Dask's own. prometheus_client comes with the
`worker` extra (the image installs it); without it Dask's /metrics answers that Prometheus is not
available and these are not collected (`enabled()` says so, `describe()` shows it).
"""

from __future__ import annotations

from modelops.executors.events import NO_EVENTS, ExecutorEvents

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
    SPAWN_FALLBACK_BUNDLES = _prom.Counter(
        "modelops_cold_spawn_fallbacks",
        "Bundles a cold-fork worker switched to spawn, by reason (threaded_import, threaded_zygotes, import_rng)",
        ["reason"],
    )
    CHILD_START_SECONDS = _prom.Histogram(
        "modelops_child_start_seconds",
        "From asking for a child process to it being ready for a task, by start method (warm, spawn, fork)",
        ["start_method"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    ZYGOTE_REPLACEMENTS = _prom.Counter(
        "modelops_zygote_restarts",
        "Cold-fork zygotes replaced because they died or became multi-threaded, by reason",
        ["reason"],
    )
    ENVIRONMENT_BUILD_SECONDS = _prom.Histogram(
        "modelops_bundle_environment_build_seconds",
        "Builds of a bundle's own Python environment (its requirements.txt) by this worker process, by "
        "where the packages came from (wheels: the bundle's own, offline; index)",
        ["installed_from"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    )
    TASK_MEMORY_PEAK = _prom.Histogram(
        "modelops_task_memory_peak_bytes",
        "Peak resident memory of the child process that ran a task (its whole life for a warm child)",
        ["executor"], buckets=tuple(2.0**n * 2**20 for n in range(3, 15)),  # 8 MiB .. 16 GiB
    )


def enabled() -> bool:
    return _prom is not None


def observe(result, configured_cold_start: str | None, memory_peak_bytes: int | None = None) -> None:
    """Count one task result (TaskResult) of this worker; `memory_peak_bytes` as its child reported."""
    if _prom is None:
        return
    p = result.provenance
    if memory_peak_bytes is not None:
        TASK_MEMORY_PEAK.labels(p.executor).observe(memory_peak_bytes)
    TASKS.labels(p.executor, p.cold_start or "", result.status, result.error.kind if result.error else "").inc()
    TASK_SECONDS.labels(p.executor).observe(p.duration_s)
    if configured_cold_start == "fork" and p.cold_start == "spawn":
        SPAWN_FALLBACKS.inc()
    if p.environment and p.environment.get("built"):  # the task that paid for its bundle's environment
        ENVIRONMENT_BUILD_SECONDS.labels(p.environment["installed_from"]).observe(p.environment["build_seconds"])


class PrometheusEvents(ExecutorEvents):
    """The executor's process events, recorded on this worker process's /metrics."""

    def child_started(self, start_method: str, seconds: float) -> None:
        CHILD_START_SECONDS.labels(start_method).observe(seconds)

    def zygote_replaced(self, reason: str) -> None:
        ZYGOTE_REPLACEMENTS.labels(reason).inc()

    def spawn_fallback(self, reason: str) -> None:
        SPAWN_FALLBACK_BUNDLES.labels(reason).inc()


def executor_events() -> ExecutorEvents:
    """What the worker's executor reports its process events to (nothing without prometheus_client)."""
    return PrometheusEvents() if _prom is not None else NO_EVENTS
