"""Process events an executor reports while it runs: the worker turns them into metrics.

Executors sit below the worker and know nothing of Prometheus; they call these hooks, which do
nothing here. `modelops.worker.metrics.PrometheusEvents` records them on the worker's /metrics.
"""

from __future__ import annotations


class ExecutorEvents:
    def child_started(self, start_method: str, seconds: float) -> None:
        """A child became ready for its task `seconds` after it was asked for.
        `start_method`: "warm", "spawn" (exec'd interpreter) or "fork" (forked by a zygote)."""

    def child_request(self, start_method: str, tasks: int) -> None:
        """One request (a message the worker sends and then reads replies to) went to a child, carrying
        `tasks` tasks: a warm child gets a whole chunk in one (`WarmExecutor.run_chunk`)."""

    def zygote_replaced(self, reason: str) -> None:
        """A zygote that stopped serving ("died", "threaded") is replaced by a new one."""

    def spawn_fallback(self, reason: str) -> None:
        """A bundle of a cold-fork worker is served by spawn from now on (`reason` is short:
        "threaded_import", "threaded_zygotes", "import_rng")."""


NO_EVENTS = ExecutorEvents()
