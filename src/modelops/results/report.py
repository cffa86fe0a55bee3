"""Reading a job or a study back: `mops results show` (a summary) and `download` (Parquet, CSV, JSON lines).

TARGET names a job, or a study: all the jobs of that study name, oldest first, one result per task
id (the latest). A download has every result column (provenance as columns) and, for convenience,
each scalar parameter and output as a column of its own (`params.beta`, `outputs.peak_infected`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from modelops.results import records
from modelops.results.store import JobRecord, ResultsStore
from modelops.results.url import StoreError
from modelops.results.json_lines import json_line
from modelops.results.summary import Summary
from modelops.tasks import TaskResult

FORMATS = ("parquet", "csv", "jsonl")
SCALARS = (bool, int, float, str, type(None))


class NothingFound(StoreError):
    """No job and no study of that name in the store."""


@dataclass(frozen=True)
class Target:
    name: str
    jobs: list[JobRecord]
    is_study: bool

    @property
    def tasks(self) -> int | None:
        """Tasks the job expands into (a study's jobs may differ: the largest)."""
        return max((j.tasks for j in self.jobs), default=None)

    def describe(self) -> str:
        if self.is_study:
            return f"study {self.name!r} ({len(self.jobs)} job(s): {', '.join(j.job for j in self.jobs)})"
        return f"job {self.name} (study {self.jobs[0].study_name!r})"


def find(store: ResultsStore, name: str) -> Target:
    jobs = store.jobs()
    by_job = [j for j in jobs if j.job == name]
    if by_job:
        return Target(name, by_job, False)
    of_study = [j for j in jobs if j.study_name == name]
    if of_study:
        return Target(name, of_study, True)
    known = sorted({j.job for j in jobs} | {j.study_name for j in jobs})
    raise NothingFound(f"results store {store.description} has no job or study named {name!r}"
                       + (f" (jobs and studies there: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''})"
                          if known else " (it holds no job yet)"))


def latest(store: ResultsStore, target: Target) -> pa.Table:
    return store.latest([j.job for j in target.jobs])


def summarize(table: pa.Table) -> Summary:
    summary = Summary()
    for record in records.iter_records(table):
        summary.add(TaskResult.model_validate(record))
    return summary


def show(store: ResultsStore, target: Target) -> list[str]:
    """The lines of `mops results show`."""
    table = latest(store, target)
    summary = summarize(table)
    lines = [f"{target.describe()} in results store {store.description}"]
    expected = target.tasks
    missing = f"  without a result: {expected - summary.total}" if expected and not target.is_study else ""
    lines.append(f"tasks: {summary.total}  succeeded: {summary.succeeded}  failed: {summary.failed}"
                 f"  reused from other jobs: {summary.reused}{missing}")
    for (kind, kind_type), count in sorted(summary.by_failure.items()):
        lines.append(f"  failed: {count} x {kind} ({kind_type})")
    workers = _workers(table)
    for worker, (executor, group, count) in sorted(workers.items()):
        lines.append(f"worker {worker}: executor {executor}, group {group}: {count} task(s)")
    lines.append(f"tasks per executor: {dict(summary.by_executor)}")
    if summary.by_start:
        lines.append(f"cold tasks per start method: {dict(summary.by_start)}")
    lines.append(f"distinct (worker, PID) pairs: {len(summary.pairs)} for {summary.computed} task(s) computed"
                 + (" (reused results are counted where they were computed)" if summary.reused else ""))
    lines.append(f"wall time of the tasks (first start to last end): {summary.task_wall_s:.2f} s")
    lines.extend(summary.failures)
    return lines


def _workers(table: pa.Table) -> dict[str, tuple[str, str, int]]:
    computed = table.filter(pc.is_null(table["reused_from"])) if table.num_rows else table
    out: dict[str, tuple[str, str, int]] = {}
    if not computed.num_rows:
        return out
    grouped = computed.group_by(["worker", "executor", "worker_group"]).aggregate([("task_id", "count")])
    for row in grouped.to_pylist():
        out[row["worker"]] = (row["executor"], row["worker_group"], row["task_id_count"])
    return out


def flattened(table: pa.Table) -> pa.Table:
    """`table` with a column per scalar parameter and output (`params.<name>`, `outputs.<name>`)."""
    for column in ("params", "outputs"):
        values = [json.loads(v) if v is not None else None for v in table[column].to_pylist()]
        names: dict[str, None] = {}
        for value in values:
            for key, item in (value or {}).items():
                if isinstance(item, SCALARS):
                    names.setdefault(key)
        for key in names:
            cells = [v.get(key) if v and isinstance(v.get(key), SCALARS) else None for v in values]
            try:
                array = pa.array(cells)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as text
                array = pa.array([None if c is None else json.dumps(c) for c in cells], pa.string())
            table = table.append_column(f"{column}.{key}", array)
    return table


def export(table: pa.Table, fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json_line(record) + "\n" for record in records.iter_records(table)).encode()
    table = flattened(table)
    if fmt == "parquet":
        return records.to_parquet(table)
    if fmt == "csv":
        import pyarrow.csv

        sink = io.BytesIO()
        pyarrow.csv.write_csv(table, sink)
        return sink.getvalue()
    raise ValueError(f"format {fmt!r} is not supported: allowed {', '.join(FORMATS)}")
