"""Build the executor a config asks for. The only place that maps names to classes.

It lives in the worker, not in `executors`: executors take plain arguments and never read the
worker's configuration."""

from __future__ import annotations

from modelops.executors.base import Executor
from modelops.executors.events import NO_EVENTS, ExecutorEvents
from modelops.settings import ColdStart, ExecutorType
from modelops.worker.config import RuntimeConfig


def build_executor(config: RuntimeConfig, slots: int, events: ExecutorEvents = NO_EVENTS) -> Executor:
    if config.executor is ExecutorType.DIRECT:
        from modelops.executors.direct import DirectExecutor

        return DirectExecutor()
    if config.executor is ExecutorType.ISOLATED_WARM:
        from modelops.executors.warm import WarmExecutor

        return WarmExecutor(
            slots=slots,
            task_timeout_s=config.task_timeout_seconds,
            max_tasks_per_process=config.warm_max_tasks_per_process,
            memory_limit_mb=config.task_memory_limit_mb,
            events=events,
        )
    if config.cold_start is ColdStart.SPAWN:
        from modelops.executors.cold_spawn import ColdSpawnExecutor

        return ColdSpawnExecutor(
            task_timeout_s=config.task_timeout_seconds,
            memory_limit_mb=config.task_memory_limit_mb,
            events=events,
        )
    from modelops.executors.cold_fork import ColdForkExecutor

    return ColdForkExecutor(
        slots=slots,
        task_timeout_s=config.task_timeout_seconds,
        memory_limit_mb=config.task_memory_limit_mb,
        preload_modules=config.cold_preload_modules,
        import_timeout_s=config.bundle_import_timeout_seconds,
        import_rng=config.cold_import_rng.value,
        events=events,
    )
