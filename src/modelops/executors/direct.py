"""`direct`: the task runs inside the Dask worker process. No isolation; for debugging."""

from __future__ import annotations

import os
import time

from modelops.bundles import Bundle
from modelops.executors.base import Executor, RunOutcome
from modelops.executors.invoke import run_job
from modelops.executors.protocol import TaskMessage
from modelops.tasks import Task


class DirectExecutor(Executor):
    name = "direct"

    def run(self, task: Task, bundle: Bundle) -> RunOutcome:
        started = time.time()
        t0 = time.perf_counter()
        reply = run_job(TaskMessage.of(task, bundle).job, bundle)
        return RunOutcome(reply, os.getpid(), started, time.perf_counter() - t0)
