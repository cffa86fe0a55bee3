"""ResultsStore: jobs and their results in a store (layout in `modelops.results`).

A job is one submission of a study (`mops run --store`, or a runner pod of `mops jobs submit`): its
record pins the study (bundle digest, entrypoint, parameters, seeds), and every result of it is a row
in one of its batches. A batch is written whole and never changed, so readers never lock: a task's
state is its LATEST row (a retryable failure, then its rerun), batches ordered by name (writer start
time, writer, sequence number).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelops.results import records
from modelops.results.blobs import BlobNotFound, Blobs, LocalBlobs, Retry, open_blobs
from modelops.results.url import StoreError, StoreUrl, parse_store_url

logger = logging.getLogger("modelops.results")

LAYOUT = "v1"
JOBS = f"{LAYOUT}/jobs"
RESULTS = f"{LAYOUT}/results"
# A job's name is a DNS label, so the same name is its Kubernetes Job's (mops jobs) and a store key.
JOB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FLUSH_SECONDS = 1.0
FLUSH_ROWS = 5000


class JobMismatch(StoreError):
    """A job name already used in the store for another study."""


def check_job_name(name: str) -> str:
    if not JOB_NAME.match(name or ""):
        raise StoreError(f"job name {name!r} is invalid: allowed 1-63 lowercase letters, digits and '-', "
                         "starting and ending with a letter or digit")
    return name


@dataclass(frozen=True)
class JobRecord:
    """What a job runs, pinned when it first starts; every later runner of the job uses these."""

    job: str
    study: dict  # the study as submitted (JSON mode), its bundle pinned
    bundle_digest: str
    entrypoint: str
    tasks: int
    created: float
    recompute: bool = False
    # what the job keeps to: the executor its first runner started on (None: --any-executor, or a record
    # written before jobs kept to one), and the worker groups that served it then
    executor: str | None = None
    groups: list | None = None

    @property
    def study_name(self) -> str:
        return self.study.get("name", "")

    def same_work(self, other: JobRecord) -> bool:
        return (self.study, self.bundle_digest, self.entrypoint) == (other.study, other.bundle_digest,
                                                                      other.entrypoint)


@dataclass(frozen=True)
class TaskStates:
    """A job's tasks by the latest row of each: ok, failed (not retryable) and retryable failures."""

    ok: np.ndarray
    failed: np.ndarray
    retryable: np.ndarray


class ResultsStore:
    def __init__(self, blobs: Blobs, url: str):
        self.blobs = blobs
        self.url = url

    @classmethod
    def open(cls, url: str | StoreUrl, retry: Retry = Retry()) -> ResultsStore:
        parsed = parse_store_url(url) if isinstance(url, str) else url
        return cls(open_blobs(parsed, retry), str(parsed))

    @property
    def description(self) -> str:
        return self.blobs.description

    def prepare(self, wait: float | None = None) -> None:
        """Make sure the store can be written before anything runs: a file store's directory is created;
        any store must answer a listing within `wait` seconds (default: its own Retry's), else
        StoreUnreachable names it."""
        if isinstance(self.blobs, LocalBlobs):
            try:
                self.blobs.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"results store {self.description}: cannot create the directory: {exc}") from None
        blobs = self.blobs
        if wait is not None:
            blobs = copy.copy(blobs)
            blobs.retry = dataclasses.replace(blobs.retry, deadline=wait)
        blobs.list(JOBS)

    # -- jobs -------------------------------------------------------------------------------------
    def job(self, name: str) -> JobRecord | None:
        try:
            data = self.blobs.get(f"{JOBS}/{check_job_name(name)}.json")
        except BlobNotFound:
            return None
        return JobRecord(**json.loads(data))

    def put_job(self, record: JobRecord) -> None:
        self.blobs.put(f"{JOBS}/{check_job_name(record.job)}.json", json.dumps(asdict(record), sort_keys=True).encode())

    def start_job(self, record: JobRecord) -> JobRecord:
        """The job's record: `record` when the job is new (then written), else the stored one, which
        must run the same study (JobMismatch naming the difference otherwise)."""
        stored = self.job(record.job)
        if stored is None:
            self.put_job(record)
            return record
        if not stored.same_work(record):
            what = ("bundle digest" if stored.bundle_digest != record.bundle_digest else
                    "entrypoint" if stored.entrypoint != record.entrypoint else "study")
            raise JobMismatch(f"job {record.job!r} already exists in results store {self.description} for another "
                              f"{what} (study {stored.study_name!r}, bundle {stored.bundle_digest[:19]}): resume it "
                              "with the same study, or give another job name")
        return stored

    def jobs(self) -> list[JobRecord]:
        out = []
        for blob in self.blobs.list(JOBS):
            if blob.key.endswith(".json"):
                try:
                    out.append(JobRecord(**json.loads(self.blobs.get(blob.key))))
                except (BlobNotFound, TypeError, ValueError):
                    continue  # removed meanwhile, or not a job record
        return sorted(out, key=lambda r: r.created)

    def jobs_of_study(self, study: str) -> list[JobRecord]:
        return [r for r in self.jobs() if r.study_name == study]

    # -- results ----------------------------------------------------------------------------------
    def batch_keys(self, job: str) -> list[str]:
        return [b.key for b in self.blobs.list(f"{RESULTS}/{check_job_name(job)}") if b.key.endswith(".parquet")]

    def batches(self, job: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The job's batches in write order (only `columns`, when given)."""
        for key in self.batch_keys(job):
            try:
                yield records.from_parquet(self.blobs.get(key), columns)
            except BlobNotFound:
                continue

    def latest(self, jobs: list[str], columns: list[str] | None = None) -> pa.Table:
        """One row per task id over `jobs` (in that order, then write order): the latest."""
        tables = [t for job in jobs for t in self.batches(job, columns)]
        if not tables:
            return records.SCHEMA.empty_table().select(columns or records.COLUMNS)
        return latest_rows(pa.concat_tables(tables))

    def task_states(self, job: str) -> TaskStates:
        """The job's tasks by their latest row, as sorted 16-byte keys (see task_keys)."""
        from modelops.results.task_keys import keys_of

        table = self.latest([job], ["task_id", "status", "error_retryable"])
        ok = pc.equal(table["status"], "ok").to_numpy(zero_copy_only=False)
        retryable = (~ok) & pc.fill_null(table["error_retryable"], False).to_numpy(zero_copy_only=False)
        keys = keys_of(table["task_id"].to_pylist())
        return TaskStates(np.sort(keys[ok]), np.sort(keys[~ok & ~retryable]), np.sort(keys[retryable]))

    def writer(self, job: str, flush_seconds: float = FLUSH_SECONDS, flush_rows: int = FLUSH_ROWS) -> JobWriter:
        return JobWriter(self, check_job_name(job), flush_seconds, flush_rows)


def latest_rows(table: pa.Table) -> pa.Table:
    """The last row of each task_id, in the order of those rows."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("__row", pa.array(np.arange(table.num_rows)))
    last = indexed.group_by("task_id", use_threads=False).aggregate([("__row", "max")])["__row_max"]
    return table.take(np.sort(last.to_numpy()))


class JobWriter:
    """A job's results written in batches: `add` buffers a result, `batch_end` (called when a set of
    results that arrived together is done) writes the buffer when `flush_seconds` have passed since
    the last write or `flush_rows` are waiting, `close` writes what is left. A write that fails for
    a transient reason is retried (the store's Retry) while the results wait in memory: none is lost."""

    def __init__(self, store: ResultsStore, job: str, flush_seconds: float, flush_rows: int):
        self.store, self.job = store, job
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        # sorts after every earlier writer of the job: a restarted runner's rows are the latest
        self.name = f"{time.time_ns():019d}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.seq = 0
        self._records: list[dict] = []
        self._last_write = time.monotonic()
        self.rows_written = 0
        self.batches_written = 0

    def add(self, record: dict) -> None:
        """One JSON-mode result (as a worker sends it)."""
        self._records.append(record)

    def pending(self) -> int:
        return len(self._records)

    def batch_end(self) -> None:
        if self._records and (len(self._records) >= self.flush_rows
                              or time.monotonic() - self._last_write >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        if not self._records:
            return
        table = records.to_table(self._records, self.job, time.time())
        key = f"{RESULTS}/{self.job}/{self.name}-{self.seq:08d}.parquet"
        self.store.blobs.put(key, records.to_parquet(table))
        self.seq += 1
        self.rows_written += len(self._records)
        self.batches_written += 1
        self._records = []
        self._last_write = time.monotonic()

    def close(self) -> None:
        self.flush()
