"""AttemptsPlugin: the scheduler counts how many times each task of a study was started, so a result's
provenance `attempt` says whether its task was restarted (a worker lost, a task handed back mid-run).

A worker running a modelops task body reports each task it starts on the batched stream it already
keeps open to the scheduler (the message `modelops.tasks.ATTEMPT_STARTED_OP`: the Dask key and the task
ids, several sharing the key of a chunk): no round trip, no extra connection, and the report reaches the
scheduler before the task's own `task-finished` or `reschedule` on that same stream. A start is a task
body beginning to run the task, not the scheduler assigning it (a transition into `processing`): a task
assigned to a worker that is drained or lost before starting it (with distributed's worker-saturation,
a worker holds more tasks than threads) was not started and does not count.

The client asks for a batch of results' counts once per batch (the comm handler `modelops_attempts`, in
the same wait as the batch's gather), before releasing their futures; a key's counts are dropped when
the scheduler forgets the key, so the memory held is the tasks in flight, never the study.

Registered by the scheduler's preload (idempotent: adding it again changes nothing). A client checks
that the handler answers before asking workers to report: a stream message the scheduler has no handler
for would close the worker's stream and lose the worker.
"""

from __future__ import annotations

from collections import Counter

from distributed.diagnostics.plugin import SchedulerPlugin

from modelops.tasks import ATTEMPT_STARTED_OP

PLUGIN_NAME = "modelops-attempts"
HANDLER = "modelops_attempts"  # the comm handler clients call


class AttemptsPlugin(SchedulerPlugin):
    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.scheduler = None
        self.starts: dict[str, Counter] = {}  # Dask key -> {task id: starts}

    async def start(self, scheduler) -> None:
        if self.scheduler is scheduler:
            return
        self.scheduler = scheduler
        scheduler.stream_handlers[ATTEMPT_STARTED_OP] = self.started
        scheduler.handlers[HANDLER] = self.attempts

    def started(self, key: str, tasks: list[str], worker: str | None = None) -> None:
        """A worker started these tasks under Dask key `key` (stream message, on the event loop). A key the
        scheduler no longer knows (cancelled meanwhile) is not counted: nothing would forget it."""
        if key in self.scheduler.tasks:
            self.starts.setdefault(key, Counter()).update(tasks)

    def attempts(self, keys: list[str]) -> dict[str, dict[str, int]]:
        """Each key's starts per task id ({} for a key with none on record)."""
        return {key: dict(self.starts.get(key) or {}) for key in keys}

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "forgotten":
            self.starts.pop(key, None)
