"""Large studies through `mops run`: batched submission and results, a client SIGKILLed mid-study,
`--resume` running exactly the missing tasks, and the in-flight bound held on the client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from tests.helpers import clean_env

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
MOPS = [sys.executable, "-m", "modelops.cli.main"]
N_TASKS = 2000


def write_study(tmp_path: Path, n: int) -> Path:
    study = tmp_path / "big.json"
    # the built-in probe: a task of microseconds, so the path around the executor is what runs
    study.write_text(json.dumps({"name": "big", "bundle": "modelops:probe",
                                 "parameters": [{"i": i} for i in range(n // 2)], "replicates": 2}))
    return study


def complete_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"half a line at the end of {path}: {data[-120:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def test_a_client_killed_mid_study_leaves_whole_lines_and_resume_runs_exactly_the_rest(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="direct")
    study_path = write_study(tmp_path, N_TASKS)
    output = tmp_path / "results.jsonl"
    args = [*MOPS, "run", str(study_path), "--scheduler", cluster.address, "--output", str(output)]
    log = tmp_path / "mops.log"  # a file, not a pipe nobody reads while the run is watched
    with log.open("w") as out:
        client = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not (output.exists() and output.read_bytes().count(b"\n") >= N_TASKS // 2):
            assert client.poll() is None, f"mops run ended before it was killed: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no half of the results within 300 s"
            time.sleep(0.01)
        client.send_signal(signal.SIGKILL)
    finally:
        if client.poll() is None:
            client.kill()
        client.wait()
    assert client.returncode == -signal.SIGKILL
    before = complete_lines(output)
    kept = output.read_bytes()
    ids = [r["task_id"] for r in before]
    assert N_TASKS // 2 <= len(ids) < N_TASKS and len(set(ids)) == len(ids)

    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=clean_env(), cwd=REPO,
                           timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    missing = N_TASKS - len(ids)
    assert f"{missing} tasks on 2 worker(s)" in again.stdout and f"{len(ids)} already done" in again.stdout
    assert f"tasks: {missing}  succeeded: {missing}  failed: 0" in again.stdout  # only the missing ran
    final = complete_lines(output)
    assert output.read_bytes().startswith(kept)  # what was there is untouched
    final_ids = [r["task_id"] for r in final]
    assert len(final_ids) == N_TASKS and len(set(final_ids)) == N_TASKS  # each task exactly once
    study = Study.load(study_path)
    with Client(cluster.address) as c:
        digest = DaskSimulationService(c).resolve_bundle("modelops:probe")["digest"]
    assert set(final_ids) == {t.task_id for t in study.iter_tasks(digest, "modelops_probe:simulate")}


def test_stream_keeps_the_in_flight_bound_and_runs_duplicates_once(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="direct")
    study = Study.load(write_study(tmp_path, 600))
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle(study.bundle)
        tasks = list(study.iter_tasks(bundle["digest"], bundle["entrypoint"]))
        held = []
        seen = []
        for done in service.stream(iter(tasks + tasks[:50]), max_in_flight=40):
            held.append(len(client.futures))
            seen.append(done.result.task_id)
            assert done.result.ok and done.record["task_id"] == done.result.task_id
        assert sorted(seen) == sorted(t.task_id for t in tasks)  # the 50 duplicates ran once
        assert max(held) <= 40 and not client.futures  # bound held; nothing left on the scheduler
        assert {r["provenance"]["attempt"] for r in [done.record]} == {1}
