"""The results store on a real directory and a real HTTP server: URLs, objects, rows, plans, reuse, reports."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import threading

import pyarrow.parquet as pq
import pytest

from modelops.results import records, report
from modelops.results.blobs import BlobNotFound, HttpBlobs, LocalBlobs, Retry, StoreUnreachable
from modelops.results.plan import StorePlan
from modelops.results.server import ResultsServer
from modelops.results.store import JobMismatch, JobRecord, ResultsStore, latest_rows
from modelops.results.task_keys import TaskKeys
from modelops.results.url import StoreUrlError, parse_store_url
from modelops.study import Study
from modelops.tasks import TaskResult

DIGEST = "sha256:" + "ab" * 32
STUDY = Study(name="sir", bundle="sir", parameters=[{"beta": 0.2}, {"beta": 0.3}], replicates=3, base_seed=1)


def result(task, status="ok", executor="cold", retryable=False, worker="tcp://w:1", pid=100, outputs=None) -> dict:
    ok = status == "ok"
    return TaskResult(
        task_id=task.task_id, status=status, params=task.params, seed=task.seed,
        outputs=(outputs or {"x": task.seed % 7}) if ok else None,
        error=None if ok else {"kind": "exception", "type": "ValueError", "message": "boom", "retryable": retryable},
        provenance={"executor": executor, "worker": worker, "worker_group": "default", "pid": pid,
                    "bundle": task.bundle, "bundle_digest": task.bundle_digest, "started": 1000.0 + task.seed % 10,
                    "duration_s": 0.5},
    ).model_dump(mode="json")


def tasks(study: Study = STUDY):
    return list(study.iter_tasks(DIGEST, "m:f"))


def job_record(name: str, study: Study = STUDY) -> JobRecord:
    return JobRecord(job=name, study=study.model_dump(mode="json", exclude_none=True), bundle_digest=DIGEST,
                     entrypoint="m:f", tasks=study.task_count(), created=1.0)


def write(store: ResultsStore, job: str, results: list[dict], study: Study = STUDY) -> None:
    store.start_job(job_record(job, study))
    writer = store.writer(job)
    for r in results:
        writer.add(r)
    writer.close()


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    s = ResultsStore.open(f"file://{tmp_path}/store", Retry(deadline=0))
    s.prepare()
    return s


# -- URLs ---------------------------------------------------------------------------------------------
def test_store_urls_parse_and_bad_ones_name_the_url_and_what_is_allowed(tmp_path):
    assert str(parse_store_url(f"file://{tmp_path}")) == f"file://{tmp_path}"
    assert parse_store_url(str(tmp_path)).scheme == "file"
    url = parse_store_url("s3://bucket-1/a/b?endpoint=http://10.0.0.5:9000&region=eu-west-1", env={})
    assert (url.bucket, url.prefix, url.endpoint, url.region) == ("bucket-1", "a/b", "http://10.0.0.5:9000", "eu-west-1")
    from_env = parse_store_url("s3://bucket-1", env={"AWS_ENDPOINT_URL_S3": "https://s3.example:443/",
                                                      "AWS_REGION": "r"})
    assert (from_env.endpoint, from_env.region, from_env.prefix) == ("https://s3.example:443", "r", "")
    for bad, says in [
        ("s3://AKIA:secret@bucket/x", "credentials in the URL are refused"),
        ("s3://B_ad/x", "bucket 'B_ad' is not a valid S3 bucket name"),
        ("s3://bucket/x?token=1", "unknown query parameter(s) token"),
        ("s3://bucket/x?endpoint=ftp://h", "endpoint 'ftp://h' is not valid"),
        ("s3://bucket/x?endpoint=http://u:p@h", "without credentials"),
        ("gs://bucket/x", "scheme 'gs' is not supported"),
        ("file://relative/path", "needs an absolute path"),
        ("s3://bucket/a/../b", "'..' segment"),
        ("", "is empty"),
    ]:
        with pytest.raises(StoreUrlError) as err:
            parse_store_url(bad, env={})
        assert says in str(err.value), str(err.value)
        assert "secret" not in str(err.value)


# -- objects --------------------------------------------------------------------------------------
def test_local_objects_are_written_whole_and_listed_without_leftovers(tmp_path):
    blobs = LocalBlobs(tmp_path, Retry(deadline=0))
    blobs.put("v1/jobs/a.json", b"{}")
    blobs.put("v1/results/a/1.parquet", b"x" * 10)
    (tmp_path / "v1" / "results" / "a" / ".tmp-deadbeef").write_bytes(b"half")  # a killed writer's
    assert [(b.key, b.size) for b in blobs.list("v1")] == [("v1/jobs/a.json", 2), ("v1/results/a/1.parquet", 10)]
    assert blobs.get("v1/jobs/a.json") == b"{}"
    with pytest.raises(BlobNotFound):
        blobs.get("v1/jobs/b.json")
    for key in ("../x", "/abs", "a/../b", ".hidden", ""):
        with pytest.raises(Exception, match="store key"):
            blobs.put(key, b"")


def test_a_transient_error_is_retried_with_backoff_and_a_permanent_one_is_not(caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        return "done"

    with caplog.at_level(logging.WARNING, logger="modelops.results"):
        assert Retry(deadline=5, first=0.01).call("writing k", "s3://b", flaky) == "done"
    assert len(calls) == 3
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["results store s3://b unreachable"] * 2

    def denied():
        calls.append(1)
        raise OSError(errno.EACCES, "Permission denied")

    calls.clear()
    with pytest.raises(StoreUnreachable, match="results store s3://b: writing k failed: PermissionError"):
        Retry(deadline=5, first=0.01).call("writing k", "s3://b", denied)
    assert len(calls) == 1

    def down():
        raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7")

    with pytest.raises(StoreUnreachable, match=r"failed for \d+ s \(\d+ attempts\)"):
        Retry(deadline=0.05, first=0.01).call("writing k", "s3://b", down)


# -- rows -----------------------------------------------------------------------------------------
def test_results_round_trip_through_parquet_with_provenance_as_columns():
    t = tasks()
    odd = result(t[0], outputs={"series": [1, 2, 3]})
    odd["outputs"].update(nan=math.nan, blob=b"\x00\xff")  # written as a results file does: "nan", {"__bytes__": hex}
    failed = result(t[1], status="failed", retryable=True)
    table = records.from_parquet(records.to_parquet(records.to_table([odd, failed], "job-a", 5.0)))
    assert table.num_rows == 2
    assert {"executor", "worker", "pid", "bundle_digest", "attempt", "reused_from", "job"} <= set(table.column_names)
    back = list(records.iter_records(table))
    assert back[0]["outputs"] == {"series": [1, 2, 3], "nan": "nan", "blob": {"__bytes__": "00ff"}}
    assert back[1]["error"]["retryable"] is True and table["error_kind"].to_pylist() == [None, "exception"]
    assert all(r["provenance"]["job"] == "job-a" for r in back)
    # what a worker sent comes back (the store adds only provenance.job)
    assert TaskResult.model_validate(back[1]) == TaskResult.model_validate(failed)


def test_the_latest_row_of_each_task_wins():
    t = tasks()
    rows = [result(t[0], "failed", retryable=True), result(t[1]), result(t[0], pid=7), result(t[2])]
    latest = latest_rows(records.to_table(rows, "j", 1.0))
    assert latest["task_id"].to_pylist() == [t[1].task_id, t[0].task_id, t[2].task_id]
    assert latest["pid"].to_pylist() == [100, 7, 100]


def test_task_keys_are_exact_sets():
    ids = [t.task_id for t in tasks()]
    keys = TaskKeys.of(ids[:4] + ["not-a-sim-id"])
    assert all(i in keys for i in ids[:4]) and "not-a-sim-id" in keys
    assert not any(i in keys for i in ids[4:]) and "sim-" + "0" * 32 not in keys
    assert len(keys.without(TaskKeys.of(ids[:2]))) == 3 and len(keys.union(TaskKeys.of(ids))) == 7


# -- jobs, plans, reuse -----------------------------------------------------------------------------
def test_a_job_name_is_bound_to_its_study(store):
    record = job_record("j1")
    assert store.start_job(record) == record and store.start_job(record) == record
    other = job_record("j1", STUDY.model_copy(update={"replicates": 4}))
    with pytest.raises(JobMismatch, match="job 'j1' already exists .* for another study"):
        store.start_job(other)


def test_a_restarted_job_keeps_its_rows_and_reruns_only_missing_and_retryable(store):
    t = tasks()
    write(store, "j1", [result(t[0]), result(t[1], "failed"), result(t[2], "failed", retryable=True)])
    plan = StorePlan(store, store.job("j1"))
    plan.classify(t)
    c = plan.counts
    assert (c.kept_ok, c.kept_failed, c.retry, c.reuse, c.run) == (1, 1, 1, 0, 4)
    assert [x.task_id for x in plan.runs(t)] == [x.task_id for x in t[2:]]


def test_another_jobs_results_are_reused_once_each_naming_where_they_were_computed(store):
    t = tasks()
    write(store, "j1", [result(t[0]), result(t[1]), result(t[2], "failed")])
    write(store, "j2", [result(t[0], pid=5), result(t[3], executor="isolated_warm")])
    store.start_job(job_record("j3"))
    plan = StorePlan(store, store.job("j3"))
    plan.classify(t)
    assert (plan.counts.reuse, plan.counts.run) == (3, 3)  # t0, t1, t3: ok somewhere; t2 failed there
    writer = store.writer("j3")
    copied = list(plan.copy_reused(writer))
    writer.close()
    assert sorted(r["task_id"] for r in copied) == sorted(x.task_id for x in (t[0], t[1], t[3]))
    assert {r["task_id"]: r["provenance"]["reused_from"] for r in copied}[t[3].task_id] == "j2"
    assert [x.task_id for x in plan.runs(t)] == [x.task_id for x in (t[2], t[4], t[5])]
    # the copies are the job's own rows now: a restart of j3 keeps them and copies nothing again
    again = StorePlan(store, store.job("j3"))
    again.classify(t)
    assert (again.counts.kept_ok, again.counts.reuse, again.counts.run) == (3, 0, 3)
    # a study that requires cold reuses only what cold computed; recompute reuses nothing
    cold = StorePlan(store, store.job("j3"), executor="cold")
    store.start_job(job_record("j4"))
    cold = StorePlan(store, store.job("j4"), executor="cold")
    cold.classify(t)
    assert cold.counts.reuse == 2
    recompute = StorePlan(store, store.job("j4"), recompute=True)
    recompute.classify(t)
    assert (recompute.counts.reuse, recompute.counts.run) == (0, 6)


def test_the_writer_batches_by_time_and_rows_and_close_writes_the_rest(store):
    t = tasks()
    store.start_job(job_record("j1"))
    writer = store.writer("j1", flush_seconds=3600, flush_rows=2)
    writer.add(result(t[0]))
    writer.batch_end()
    assert store.batch_keys("j1") == []  # neither old enough nor enough rows
    writer.add(result(t[1]))
    writer.batch_end()
    assert len(store.batch_keys("j1")) == 1
    writer.add(result(t[2]))
    writer.close()
    keys = store.batch_keys("j1")
    assert len(keys) == 2 and keys == sorted(keys)
    assert store.latest(["j1"]).num_rows == 3


# -- serving and reading back ---------------------------------------------------------------------------
@pytest.fixture
def served(store):
    server = ResultsServer(store.blobs, store.url, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def http_fetch(base):
    import urllib.error
    import urllib.request

    def fetch(path: str) -> bytes:
        try:
            with urllib.request.urlopen(f"{base}/{path}", timeout=10) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 404:
                    raise BlobNotFound(exc.read().decode()) from None
                raise OSError(f"{exc.code}") from None

    return fetch


def test_a_store_read_through_its_server_is_the_same_store_and_read_only(store, served):
    import urllib.error
    import urllib.request

    t = tasks()
    write(store, "j1", [result(x) for x in t])
    remote = ResultsStore(HttpBlobs(http_fetch(served), "served", Retry(deadline=0)), store.url)
    assert [j.job for j in remote.jobs()] == ["j1"]
    assert remote.latest(["j1"]).equals(store.latest(["j1"]))
    assert remote.blobs.store_status() == {"url": store.url, "ok": True, "error": None}
    with pytest.raises(BlobNotFound):
        remote.blobs.get("v1/jobs/none.json")
    for path, code in (("v1/get/..%2F..%2Fetc%2Fpasswd", 400), ("v1/put/x", 404)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{served}/{path}", timeout=10)
        err.value.close()
        assert err.value.code == code
    request = urllib.request.Request(f"{served}/v1/get/v1/jobs/j1.json", data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    err.value.close()
    assert err.value.code == 501
    assert json.loads(store.blobs.get("v1/jobs/j1.json"))["job"] == "j1"


def test_show_and_download_a_job_and_a_study(store, tmp_path):
    t = tasks()
    write(store, "j1", [result(x, worker=f"tcp://w:{i % 2}", pid=200 + i) for i, x in enumerate(t[:4])]
          + [result(t[4], "failed")])
    target = report.find(store, "j1")
    lines = report.show(store, target)
    assert "tasks: 5  succeeded: 4  failed: 1  reused from other jobs: 0  without a result: 1" in lines
    assert "  failed: 1 x exception (ValueError)" in lines
    assert "distinct (worker, PID) pairs: 5 for 5 task(s) computed" in lines
    assert "worker tcp://w:0: executor cold, group default: 2 task(s)" in lines
    assert report.find(store, "sir").is_study
    with pytest.raises(Exception, match="has no job or study named 'nope' \\(jobs and studies there: j1, sir\\)"):
        report.find(store, "nope")
    table = report.latest(store, target)
    parquet = tmp_path / "r.parquet"
    parquet.write_bytes(report.export(table, "parquet"))
    back = pq.read_table(parquet)
    assert back.num_rows == 5 and back["params.beta"].to_pylist()[0] == 0.2 and "outputs.x" in back.column_names
    csv = report.export(table, "csv").decode().splitlines()
    assert len(csv) == 6 and '"task_id"' in csv[0]
    jsonl = [json.loads(line) for line in report.export(table, "jsonl").decode().splitlines()]
    assert [TaskResult.model_validate(r).task_id for r in jsonl] == table["task_id"].to_pylist()


def test_a_store_that_is_a_file_or_unwritable_is_refused_at_once(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(Exception, match="cannot create the directory"):
        ResultsStore.open(f"file://{tmp_path}/afile/store", Retry(deadline=0)).prepare()
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o500)
        store = ResultsStore.open(f"file://{readonly}", Retry(deadline=5))
        with pytest.raises(StoreUnreachable, match="PermissionError"):
            store.blobs.put("v1/jobs/x.json", b"{}")
