"""What a job's run does with each task of its study, decided from the store before anything runs.

By each task's own latest row in the job:
- ok, or failed for a reason a rerun would repeat: kept (a restarted runner never recomputes it);
- failed retryably (a registry down, a worker lost) or no row yet: to do.
A task to do is reused when another job of the same bundle digest and entrypoint holds an ok row
for it (computed by the executor the study requires, when it requires one): its row is copied into
this job, `reused_from` naming the job that computed it. `recompute` turns reuse off, never the
job's own rows: a restarted runner keeps what its job already has either way. The rest runs.

The executor is not part of a task's id: the id says what is computed (bundle digest, entrypoint,
params, seed), and a model whose results depend on how its process was isolated is the bug the
`cold` executor exists to expose. A study that requires an executor reuses only results that
executor computed; to check one executor against another, rerun with `recompute`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from modelops.results.store import JobRecord, ResultsStore, TaskStates, latest_rows
from modelops.results.task_keys import TaskKeys, keys_of
from modelops.tasks import Task

logger = logging.getLogger("modelops.results")

CHUNK = 4096


@dataclass
class PlanCounts:
    kept_ok: int = 0
    kept_failed: int = 0
    retry: int = 0  # own latest row failed retryably: runs again (or is reused)
    reuse: int = 0
    run: int = 0
    lookup_seconds: float = 0.0

    def describe(self) -> str:
        return (f"{self.kept_ok + self.kept_failed} kept from earlier runs of this job ({self.kept_ok} ok, "
                f"{self.kept_failed} failed not retryable), {self.reuse} reused from other jobs, "
                f"{self.run} to run ({self.retry} of them failed retryably before)")


class StorePlan:
    def __init__(self, store: ResultsStore, record: JobRecord, executor: str | None = None,
                 recompute: bool = False):
        self.store, self.record, self.executor, self.recompute = store, record, executor, recompute
        started = time.perf_counter()
        states: TaskStates = store.task_states(record.job)
        self.kept = TaskKeys(np.concatenate([states.ok, states.failed]))
        self._kept_ok = TaskKeys(states.ok)
        self._retryable = TaskKeys(states.retryable)
        self.sources: list[str] = []  # other jobs that may hold reusable rows
        self.reusable = TaskKeys() if recompute else self._reusable()
        self.to_copy = TaskKeys()
        self.counts = PlanCounts()
        self._started = started

    def _reusable(self) -> TaskKeys:
        keys = []
        for other in self.store.jobs():
            if other.job == self.record.job or (other.bundle_digest, other.entrypoint) != (
                    self.record.bundle_digest, self.record.entrypoint):
                continue
            self.sources.append(other.job)
            for table in self.store.batches(other.job, ["task_id", "status", "executor"]):
                ok = pc.equal(table["status"], "ok")
                if self.executor:
                    ok = pc.and_(ok, pc.equal(table["executor"], self.executor))
                keys.append(keys_of(table.filter(ok)["task_id"].to_pylist()))
        return TaskKeys(np.concatenate(keys) if keys else None)

    def classify(self, tasks: Iterable[Task]) -> None:
        """One pass over the study's tasks: counts, and which to copy instead of running."""
        copy = []
        for chunk in _chunks(tasks):
            keys = keys_of(t.task_id for t in chunk)
            kept = self.kept.member(keys)
            kept_ok = self._kept_ok.member(keys)
            todo = ~kept
            reuse = todo & self.reusable.member(keys)
            self.counts.kept_ok += int(kept_ok.sum())
            self.counts.kept_failed += int((kept & ~kept_ok).sum())
            self.counts.retry += int((todo & self._retryable.member(keys)).sum())
            self.counts.reuse += int(reuse.sum())
            self.counts.run += int((todo & ~reuse).sum())
            copy.append(keys[reuse])
        self.to_copy = TaskKeys(np.concatenate(copy) if copy else None)
        self.counts.lookup_seconds = time.perf_counter() - self._started

    def runs(self, tasks: Iterable[Task]) -> Iterator[Task]:
        """The tasks that run (neither kept nor reused), in study order."""
        for chunk in _chunks(tasks):
            keys = keys_of(t.task_id for t in chunk)
            skip = self.kept.member(keys) | self.to_copy.member(keys)
            for task, skipped in zip(chunk, skip):
                if not skipped:
                    yield task

    def copy_reused(self, writer) -> Iterator[dict]:
        """Copy one ok row per task to reuse into `writer` (provenance `reused_from`: the job that computed
        it); yields each copied JSON-mode result. Reads the other jobs' batches once, one at a time."""
        from modelops.results.records import iter_records

        if not len(self.to_copy):
            return
        copied = np.zeros(len(self.to_copy), dtype=bool)
        for source in self.sources:
            for table in self.store.batches(source):
                ok = pc.equal(table["status"], "ok")
                if self.executor:
                    ok = pc.and_(ok, pc.equal(table["executor"], self.executor))
                table = latest_rows(table.filter(ok))
                if not table.num_rows:
                    continue
                keys = keys_of(table["task_id"].to_pylist())
                at = np.searchsorted(self.to_copy.keys, keys)
                at[at >= len(self.to_copy.keys)] = 0
                wanted = (self.to_copy.keys[at] == keys) & ~copied[at]
                if not wanted.any():
                    continue
                copied[at[wanted]] = True
                for record in iter_records(table.filter(wanted)):
                    computed_by = record["provenance"].pop("job")
                    record["provenance"]["reused_from"] = record["provenance"].get("reused_from") or computed_by
                    writer.add(record)
                    yield record
                writer.batch_end()
                if copied.all():
                    return


def _chunks(tasks: Iterable[Task]) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    for task in tasks:
        chunk.append(task)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

