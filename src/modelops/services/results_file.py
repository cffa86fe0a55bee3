"""Results as JSON lines, written in batches of whole lines.

A batch is one `os.write` of complete lines on an O_APPEND descriptor, so a killed client leaves
the file ending at a line boundary: results still in the buffer are simply missing and `--resume`
runs those tasks again. Should the kernel ever cut a write short (a fatal signal while a large
write is copied in), the reader ignores the torn last line and `open(truncate=False)` drops it
before appending, so `--resume` can trust every line it reads.

The caller flushes at the end of each batch of results that arrived together (so no finished
result waits in memory while the client waits for the next); `flush_bytes` caps a batch. The
per-result cost is one `json.dumps` and a list append.

The file is append-only: `--resume` never rewrites a line. A task may therefore have several lines
(a failed attempt, then its rerun), and every reader counts a task by its LATEST line
(`latest_states`, `latest_records`). `plan_resume` decides what `--resume` runs: a task without a
line, or whose latest line failed with `error.retryable` true (a registry that was down, a worker
lost); a task whose latest line is ok, or failed for a reason a rerun would repeat, is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from modelops.results.json_lines import json_line, read_json_lines
from modelops.results.task_keys import KEY, keys_of, task_key
from modelops.tasks import TaskResult

FLUSH_BYTES = 256 * 1024

# What a task's latest line says about it.
OK = "ok"
FAILED = "failed"  # failed, not retryable: a rerun would fail the same way, so --resume keeps it
RETRYABLE = "retryable"  # failed with error.retryable true: --resume runs it again
_STATES = (OK, FAILED, RETRYABLE)
_CODES = {state: code for code, state in enumerate(_STATES)}
NONE = len(_STATES)  # the code of a task without a line


def line_state(record: dict) -> str:
    """OK, FAILED or RETRYABLE for one result line (a JSON-mode TaskResult)."""
    if record.get("status") == "ok":
        return OK
    error = record.get("error")
    return RETRYABLE if isinstance(error, dict) and error.get("retryable") is True else FAILED


class ResultsFile:
    def __init__(self, path: str | Path, flush_bytes: int = FLUSH_BYTES):
        self.path = Path(path)
        self.flush_bytes = flush_bytes
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0

    def _records(self) -> Iterator[dict]:
        """Every whole result line in file order (a torn last line, if any, is ignored)."""
        if not self.path.exists():
            return
        for record in read_json_lines(self.path):
            if isinstance(record.get("task_id"), str):
                yield record

    def completed_task_ids(self) -> set[str]:
        """Task ids that have at least one result line, whatever its status."""
        return {record["task_id"] for record in self._records()}

    def ok_executors(self) -> set[str]:
        """The executors that computed the file's successful results: what a resumed study keeps to."""
        return {record["provenance"]["executor"] for record in self._records()
                if record.get("status") == "ok" and isinstance(record.get("provenance"), dict)}

    def latest_states(self) -> dict[str, str]:
        """Each task id's state (OK, FAILED, RETRYABLE) as its latest line says."""
        return {record["task_id"]: line_state(record) for record in self._records()}

    def latest_records(self) -> Iterator[dict]:
        """The latest line of each task, in the order of those lines: one result per task however
        often it ran. Two passes over the file; memory holds one line number per task."""
        latest = {record["task_id"]: n for n, record in enumerate(self._records())}
        wanted = set(latest.values())
        del latest
        for n, record in enumerate(self._records()):
            if n in wanted:
                yield record

    def latest_state_keys(self) -> LatestStates:
        """Each task id's state by its latest line, compactly: 17 bytes a task (its 16-byte key and a state
        code), not a dict of id strings (~0.2 KiB a task), so resuming a 10^6-task study stays small."""
        keys, codes = bytearray(), bytearray()
        for record in self._records():
            keys += task_key(record["task_id"])
            codes.append(_CODES[line_state(record)])
        return LatestStates(np.frombuffer(bytes(keys), dtype=KEY), np.frombuffer(bytes(codes), dtype=np.uint8))

    def plan_resume(self, task_ids: Iterable[str]) -> ResumePlan:
        """What `--resume` does with the tasks `task_ids` (a study's), by each task's latest line."""
        return ResumePlan(self.latest_state_keys(), task_ids)

    def open(self, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)
        if not truncate:
            self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb") as fh:
            # a torn line is at most one result long: look back from the end in steps
            step = 64 * 1024
            end = size
            while end > 0:
                start = max(0, end - step)
                fh.seek(start)
                newline = fh.read(end - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
            else:
                keep = 0
        if keep != size:
            os.truncate(self.path, keep)

    def append(self, result: TaskResult) -> None:
        """Write one validated result now (the unbatched form; `add` + `flush` batch)."""
        self.add(result.model_dump(mode="json"))
        self.flush()

    def add(self, payload: dict) -> None:
        """Buffer one result (a JSON-mode dict, as workers send it); written at the next flush(), or
        now if the buffer holds flush_bytes."""
        assert self._fd is not None, "open() the results file first"
        line = (json_line(payload) + "\n").encode()
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines: one os.write of whole lines (looping only on a short write)."""
        if not self._buffer:
            return
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        self._buffered = 0
        while data:
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = None


@dataclass(frozen=True)
class StudyTally:
    """A study's tasks counted by the latest result line of each (distinct task ids)."""

    tasks: int
    ok: int
    failed: int  # latest line failed, not retryable
    retryable: int  # latest line failed, retryable
    missing: int  # no line yet

    @property
    def complete(self) -> bool:
        return self.ok == self.tasks

    def describe(self) -> str:
        return (f"{self.tasks} tasks: {self.ok} ok, {self.failed + self.retryable} failed "
                f"({self.retryable} retryable), {self.missing} without a result")


class LatestStates:
    """Task ids (16-byte keys, `results.task_keys`) and the state of each one's latest line: sorted unique keys
    and a state code per key. Built from keys and codes in file order: the last occurrence of a key wins."""

    def __init__(self, keys: np.ndarray, codes: np.ndarray):
        # the latest line of a key is its first occurrence in the reversed file
        self.keys, first = np.unique(keys[::-1], return_index=True)
        self.codes = codes[::-1][first]

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Each key's state code; NONE for a key without a line."""
        found = np.full(len(keys), NONE, dtype=np.uint8)
        if len(self.keys):
            at = np.searchsorted(self.keys, keys)
            inside = at < len(self.keys)
            hit = np.zeros(len(keys), dtype=bool)
            hit[inside] = self.keys[at[inside]] == keys[inside]
            found[hit] = self.codes[at[hit]]
        return found

    def state(self, task_id: str) -> str | None:
        """One task's state (a binary search: `--resume` asks once per task of the study)."""
        if not len(self.keys):
            return None
        key = task_key(task_id)
        at = int(self.keys.searchsorted(np.array(key, dtype=KEY)))  # a 0-d array: no conversion per call
        # numpy reads an S16 element back without its trailing zero bytes: compare the key stripped alike
        if at < len(self.keys) and self.keys[at] == key.rstrip(b"\0"):
            return _STATES[self.codes[at]]
        return None


class ResumePlan:
    """`--resume` for one study: which of its tasks run again, counted by the latest line of each.

    Runs: tasks without a line (`missing`) and tasks whose latest line failed retryably (`retry`).
    Kept: tasks whose latest line is ok (`kept_ok`) or failed for a reason that is not retryable
    (`kept_failed`). Lines of tasks that are not the study's (`foreign`: another bundle digest,
    entrypoint, parameters or seeds) are left alone. `record` counts the rerun's results as they arrive,
    so `tally()` counts the study by the latest line of each task, as the file will.

    Memory: the file's LatestStates (17 bytes per task with a line) and counters; the study's task ids
    are streamed through once, in blocks (each task id of `task_ids` is counted once: give them distinct,
    as `Study.iter_tasks` does)."""

    def __init__(self, latest: LatestStates, task_ids: Iterable[str], block: int = 4096):
        self.latest = latest
        counts = np.zeros(NONE + 1, dtype=np.int64)
        ids = iter(task_ids)
        while block_ids := list(islice(ids, block)):
            counts += np.bincount(latest.lookup(keys_of(block_ids)), minlength=NONE + 1)
        self.kept_ok, self.kept_failed = int(counts[_CODES[OK]]), int(counts[_CODES[FAILED]])
        self.retry, self.missing = int(counts[_CODES[RETRYABLE]]), int(counts[NONE])
        self.foreign = len(latest) - (self.kept_ok + self.kept_failed + self.retry)
        self.new = {OK: 0, FAILED: 0, RETRYABLE: 0}  # this run's results, by state
        self.rerun_retry = self.rerun_missing = 0  # this run's results of tasks that were to retry, missing

    @property
    def kept(self) -> int:
        return self.kept_ok + self.kept_failed

    @property
    def to_run(self) -> int:
        return self.retry + self.missing

    def runs(self, task_id: str) -> bool:
        """Whether `--resume` submits this task."""
        state = self.latest.state(task_id)
        return state is None or state == RETRYABLE

    def record(self, record: dict) -> None:
        """A result of this run for one of the study's tasks it ran (its latest line from now on)."""
        if self.latest.state(record["task_id"]) == RETRYABLE:
            self.rerun_retry += 1
        else:
            self.rerun_missing += 1
        self.new[line_state(record)] += 1

    def tally(self) -> StudyTally:
        return StudyTally(tasks=self.kept + self.to_run, ok=self.kept_ok + self.new[OK],
                          failed=self.kept_failed + self.new[FAILED],
                          retryable=self.retry - self.rerun_retry + self.new[RETRYABLE],
                          missing=self.missing - self.rerun_missing)

    def describe(self, path: str | Path) -> str:
        text = (f"Resume from {path}: {self.kept} kept ({self.kept_ok} ok, {self.kept_failed} failed not retryable), "
                f"{self.retry} rerun (failed retryable), {self.missing} missing")
        if self.foreign:
            text += (f"; {self.foreign} task id(s) in the file are not tasks of this study (another bundle digest, "
                     "entrypoint, parameters or seeds): left alone")
        return text
