"""`mops run --store` on real local clusters: results durable batch by batch, reused by their inputs, a killed
or stopped client resumed exactly once, and a real S3 server that goes away mid-study."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from modelops.results.store import ResultsStore
from tests.helpers import REPO, S3Server, clean_env, versitygw_binary, wait_until

pytestmark = pytest.mark.cluster
MOPS = [sys.executable, "-m", "modelops.cli.main"]
EXAMPLES = REPO / "examples"
RUNNING = re.compile(r"Child process PID (\d+) running task (\S+) \(Executor: (\w+)\)")


def mops(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MOPS, *args], capture_output=True, text=True, env={**clean_env(), **(env or {})},
                          timeout=timeout, cwd=REPO)


def study_file(tmp_path: Path, name: str, replicates: int, bundle: str = "sir", params=None) -> Path:
    path = tmp_path / f"{name}-{replicates}.json"
    path.write_text(json.dumps({"name": name, "bundle": bundle, "replicates": replicates, "base_seed": 7,
                                "parameters": params or [{"beta": 0.2, "gamma": 0.1}, {"beta": 0.4, "gamma": 0.1}]}))
    return path


def runs_logged(cluster) -> Counter:
    """How many times each task id was started in a child process, from the workers' own log lines."""
    return Counter(m.group(2) for text in cluster.worker_logs() for m in RUNNING.finditer(text))


def job_rows(store_url: str, job: str, env: dict | None = None) -> list[dict]:
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        table = ResultsStore.open(store_url).latest([job])
        every = [t for t in ResultsStore.open(store_url).batches(job, ["task_id", "status"])]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    rows = table.to_pylist()
    stored = [tid for t in every for tid in t["task_id"].to_pylist()]
    assert len(stored) == len(set(stored)), "a task was stored twice"
    return rows


def test_more_replicates_run_only_the_new_seeds_and_the_rest_is_reused(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_BUNDLES_DIR=str(EXAMPLES))
    store = f"file://{tmp_path}/store"
    small, large = study_file(tmp_path, "sir", 3), study_file(tmp_path, "sir", 6)
    first = mops("run", str(small), "--scheduler", cluster.address, "--store", store, "--job", "sir-3")
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = runs_logged(cluster)
    assert sum(after_first.values()) == 6
    second = mops("run", str(large), "--scheduler", cluster.address, "--store", store, "--job", "sir-6")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "6 reused from other jobs, 6 to run" in second.stdout
    assert "tasks: 12  succeeded: 12 (reused: 6)" in second.stdout
    ran = runs_logged(cluster) - after_first
    # counted from the workers' own lines: only the 6 new seeds ran, each once, each in a fresh process
    assert sum(ran.values()) == 6 and set(ran.values()) == {1} and not set(ran) & set(after_first)
    rows = job_rows(store, "sir-6")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    reused = [r for r in rows if r["reused_from"]]
    assert {r["task_id"] for r in reused} == set(after_first) and {r["reused_from"] for r in reused} == {"sir-3"}
    show = mops("results", "show", "sir-6", "--store", store)
    assert "tasks: 12  succeeded: 12  failed: 0  reused from other jobs: 6" in show.stdout, show.stdout + show.stderr
    # --recompute runs everything again (a check of one executor against another)
    again = mops("run", str(large), "--scheduler", cluster.address, "--store", store, "--job", "sir-6-again",
                 "--recompute")
    assert again.returncode == 0 and "0 reused from other jobs, 12 to run" in again.stdout, again.stdout


def test_a_study_requiring_an_executor_reuses_only_what_that_executor_computed(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="isolated_warm", MODELOPS_BUNDLES_DIR=str(EXAMPLES))
    cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "cold"})
    cluster.wait_for_workers(2)
    store = f"file://{tmp_path}/store"
    study = study_file(tmp_path, "sir", 2)
    warm = mops("run", str(study), "--scheduler", cluster.address, "--store", store, "--job", "warm",
                "--require-executor", "isolated_warm")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    cold = mops("run", str(study), "--scheduler", cluster.address, "--store", store, "--job", "cold",
                "--require-executor", "cold")
    assert cold.returncode == 0 and "0 reused from other jobs, 4 to run" in cold.stdout, cold.stdout
    assert {r["executor"] for r in job_rows(store, "cold")} == {"cold"}


def _start_slow_study(cluster, tmp_path, store, job, n=40, seconds=0.25, env=None):
    study = study_file(tmp_path, "slow", 1, bundle="sleep", params=[{"seconds": seconds, "i": i} for i in range(n)])
    proc = subprocess.Popen([*MOPS, "run", str(study), "--scheduler", cluster.address, "--store", store, "--job", job,
                             "--max-in-flight", "4", "--progress", "none"], cwd=REPO, env={**clean_env(), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return study, proc


def _stored_ok(store: str, job: str, env=None) -> set[str]:
    try:
        return {r["task_id"] for r in job_rows(store, job, env) if r["status"] == "ok"}
    except Exception:  # noqa: BLE001 - the job's record may not be written yet
        return set()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_stopped_client_resumes_its_job_exactly_once(cluster_factory, tmp_path, how):
    """Killed (SIGKILL: what arrived but was not yet written is lost, and runs again) or stopped (SIGTERM: what
    arrived is written first, exit 143): the same job run again runs only what has no stored result, and
    nothing stored is ever run twice (counted from the workers' log lines)."""
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_BUNDLES_DIR=str(EXAMPLES))
    store = f"file://{tmp_path}/store"
    study, proc = _start_slow_study(cluster, tmp_path, store, "slow")
    wait_until(lambda: len(_stored_ok(store, "slow")) >= 6, timeout=60, what="6 stored results", interval=0.1)
    os.kill(proc.pid, getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    stored = _stored_ok(store, "slow")
    if how == "SIGTERM":
        assert proc.returncode == 143 and "SIGTERM: stopped" in err, out + err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert 6 <= len(stored) < 40
    time.sleep(1.0)  # the dead client's running tasks end on the workers (their results are dropped)
    before = runs_logged(cluster)
    again = mops("run", str(study), "--scheduler", cluster.address, "--store", store, "--job", "slow")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(stored)} kept from earlier runs of this job" in again.stdout
    rows = job_rows(store, "slow")
    assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
    rerun = runs_logged(cluster) - before
    assert not set(rerun) & stored, "a task whose result was stored ran again"
    assert sum(rerun.values()) == 40 - len(stored)


def test_a_real_s3_store_that_stops_mid_study_loses_and_doubles_nothing(cluster_factory, tmp_path):
    server = S3Server(versitygw_binary(), tmp_path / "s3")
    server.make_bucket("results")
    server.start()
    try:
        cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="isolated_warm",
                                  MODELOPS_BUNDLES_DIR=str(EXAMPLES))
        store = "s3://results/studies/team-a"
        study, proc = _start_slow_study(cluster, tmp_path, store, "s3-study", n=40, seconds=0.2,
                                        env=server.client_env)
        wait_until(lambda: len(_stored_ok(store, "s3-study", server.client_env)) >= 4, timeout=60,
                   what="4 results in the S3 store", interval=0.2)
        server.stop()  # the store goes away mid-study; tasks go on, results wait in the client
        time.sleep(4)
        server.start()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
        assert "unreachable" in err and "retrying in" in err  # the client said what it waited for
        rows = job_rows(store, "s3-study", server.client_env)
        assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
        assert sum(runs_logged(cluster).values()) == 40  # nothing ran twice
        # the objects are where the URL says, and credentials are nowhere in them or in the output
        objects = [str(p.relative_to(tmp_path / "s3" / "data")) for p in (tmp_path / "s3" / "data").rglob("*.parquet")]
        assert objects and all(o.startswith("results/studies/team-a/v1/results/s3-study/") for o in objects)
        assert server.secret_key not in out + err
        assert not any(server.secret_key.encode() in p.read_bytes() for p in (tmp_path / "s3" / "data").rglob("*")
                       if p.is_file())
    finally:
        server.stop()


def test_bad_store_input_is_refused_naming_it_before_any_task(tmp_path, cluster_factory):
    study = study_file(tmp_path, "sir", 1)
    bad = mops("run", str(study), "--scheduler", "tcp://127.0.0.1:1", "--store", "s3://Bad_Bucket/x")
    assert bad.returncode == 2 and "bucket 'Bad_Bucket' is not a valid S3 bucket name" in bad.stderr
    creds = mops("run", str(study), "--scheduler", "tcp://127.0.0.1:1", "--store", "s3://AKIA:hunter2@bucket/x")
    assert creds.returncode == 2 and "credentials in the URL are refused" in creds.stderr
    assert "hunter2" not in creds.stderr + creds.stdout
    name = mops("run", str(study), "--scheduler", "tcp://127.0.0.1:1", "--store", str(tmp_path), "--job", "Bad Name")
    assert name.returncode == 2 and "job name 'Bad Name' is invalid" in name.stderr
    cluster = cluster_factory(n_workers=1, MODELOPS_BUNDLES_DIR=str(EXAMPLES))
    unreachable = mops("run", str(study), "--scheduler", cluster.address, "--store", "s3://no-such-bucket/x",
                       "--store-wait", "2", env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "a",
                                                "AWS_SECRET_ACCESS_KEY": "b"})
    assert unreachable.returncode == 4, unreachable.stdout + unreachable.stderr
    assert "results store s3://no-such-bucket/x (endpoint http://127.0.0.1:9)" in unreachable.stderr
    assert not runs_logged(cluster)
