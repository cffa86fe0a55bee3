"""What a study run prints at the end (and `mops results show`), counted as results arrive.

No list of results is kept: a 10^6-task study is summarised in memory that does not grow with it,
except the distinct (worker, PID) pairs, which are what `cold` promises (one per task) and so are
counted exactly.
"""

from __future__ import annotations

import sys
from collections import Counter

FAILURES_SHOWN = 50


class Summary:
    """Counts of one run's results (one per task: a run runs a task id once). With a resume or a results
    store, `study` counts the whole study by the latest result of each task (kept ones and this run's)."""

    def __init__(self, results=()):
        self.total = self.succeeded = self.retryable = self.reused = 0
        self.study = None  # a results_file.StudyTally, when the run resumed or used a store
        self.by_executor: Counter = Counter()
        self.by_group_executor: Counter = Counter()
        self.by_start: Counter = Counter()
        self.by_failure: Counter = Counter()  # (kind, type)
        self.pairs: set[tuple[str, int]] = set()  # (worker, PID): PIDs are per PID namespace (pod)
        self.failures: list[str] = []  # the first FAILURES_SHOWN, as lines
        self.first_started: float | None = None
        self.last_finished: float | None = None
        for result in results:
            self.add(result)

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    def add(self, r) -> None:
        self.total += 1
        self.succeeded += r.ok
        p = r.provenance
        if p.reused_from:
            self.reused += 1
        self.by_executor[p.executor] += 1
        self.by_group_executor[(p.worker_group, p.executor)] += 1
        if p.cold_start:
            self.by_start[p.cold_start] += 1
        if p.pid and not p.reused_from:
            self.pairs.add((sys.intern(p.worker), p.pid))
        if p.started:
            end = p.started + p.duration_s
            self.first_started = p.started if self.first_started is None else min(self.first_started, p.started)
            self.last_finished = end if self.last_finished is None else max(self.last_finished, end)
        if not r.ok:
            self.retryable += bool(r.error and r.error.retryable)
            self.by_failure[(r.error.kind, r.error.type) if r.error else ("unknown", "unknown")] += 1
            if len(self.failures) < FAILURES_SHOWN:
                self.failures.append(f"FAILED {r.task_id} params={r.params} seed={r.seed}: "
                                     f"{r.error.kind}: {r.error.type}: {r.error.message}")

    @property
    def computed(self) -> int:
        """Results computed by this run (not reused)."""
        return self.total - self.reused

    @property
    def task_wall_s(self) -> float:
        """From the first task's start to the last task's end (as the workers' clocks say)."""
        if self.first_started is None:
            return 0.0
        return self.last_finished - self.first_started
