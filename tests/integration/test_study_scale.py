"""Large studies through `mops run`: batched submission and results, a client SIGKILLed mid-study,
`--resume` running exactly the missing tasks, and the in-flight bound held on the client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import deque
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


def large_containers(at_least: int) -> list[str]:
    """The Python containers (gc-tracked: sets, dicts, lists, deques) of this process holding at least
    `at_least` items: a study's per-task state would be one."""
    import gc

    return [f"{type(o).__name__} of {len(o)}" for o in gc.get_objects()
            if isinstance(o, (set, frozenset, dict, list, deque)) and len(o) >= at_least]


def test_a_20000_task_study_holds_nothing_per_task_in_the_client_or_the_scheduler(cluster_factory, tmp_path):
    """Structural, not timed: three quarters into a 20,000-task study (chunks sized automatically, results to
    a file, attempts counted, at most 2,000 tasks in flight), no container in the client holds twice as many
    items as are in flight, the scheduler holds only the tasks in flight and the AttemptsPlugin's counts for
    no more keys than it holds;
    when the study ends both are empty; the logs of batches sent (distributed's, for debugging) keep a few.
    Before, the stream kept a set of every task id it had seen, and both logs every chunk's specs up to
    1,000 batches (the scheduler grew from 69 to 303 MiB over 10^6 probe tasks)."""
    from modelops.scheduler.attempts import PLUGIN_NAME
    from modelops.scheduler.message_logs import RECENT_MESSAGES
    from modelops.services.study_run import StudyRun

    n, in_flight = 20_000, 2_000
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="direct")
    study = Study(name="held", bundle="modelops:probe", parameters=[{"i": i} for i in range(n // 100)],
                  replicates=100)

    def scheduler_state(dask_scheduler):
        starts = dask_scheduler.plugins[PLUGIN_NAME].starts
        return {"tasks": len(dask_scheduler.tasks), "keys_counted": len(starts),
                "task_ids_counted": sum(len(c) for c in starts.values()),
                "counted_not_held": len(set(starts) - set(dask_scheduler.tasks)),
                # batches sent to workers that the scheduler keeps for debugging: each one a chunk's specs
                "batches_logged": max(len(c.recent_message_log) for c in dask_scheduler.stream_comms.values())}

    seen: dict = {}
    with Client(cluster.address) as client:
        def on_result(result) -> None:
            seen["n"] = seen.get("n", 0) + 1
            if seen["n"] == 3 * n // 4:
                seen["client"] = large_containers(2 * in_flight)
                seen["scheduler"] = client.run_on_scheduler(scheduler_state)

        outcome = StudyRun(client, study, output=str(tmp_path / "results.jsonl"), progress=False,
                           max_in_flight=in_flight, on_result=on_result, say=lambda _: None).run()
        assert outcome.summary.succeeded == n and outcome.complete
        assert seen["client"] == [], seen["client"]
        mid = seen["scheduler"]
        assert mid["counted_not_held"] == 0 and mid["task_ids_counted"] <= in_flight, mid
        assert mid["tasks"] <= in_flight, mid
        # the scheduler's and this client's logs of batches sent keep the last few, not a study's every chunk
        assert mid["batches_logged"] <= RECENT_MESSAGES, mid
        assert len(client.scheduler_comm.recent_message_log) <= RECENT_MESSAGES
        deadline = time.monotonic() + 10  # releases reach the scheduler on the client's batched stream
        while (end := client.run_on_scheduler(scheduler_state))["tasks"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert end["batches_logged"] <= RECENT_MESSAGES, end
        del end["batches_logged"]
        assert end == {"tasks": 0, "keys_counted": 0, "task_ids_counted": 0, "counted_not_held": 0}, end
    ids = [r["task_id"] for r in complete_lines(tmp_path / "results.jsonl")]
    assert len(ids) == len(set(ids)) == n
