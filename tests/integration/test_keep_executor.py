"""Studies while the pools change (issue 22 item 5), on real local Dask processes: mid-study the cold workers
are replaced by isolated_warm ones, as a `helm upgrade` rolling the pods does. A study keeps to the executor it
started on: it waits, saying what for and what changed, and then either finishes on workers of that executor
or fails with the bound's message; it never hangs silently and never mixes executors unless told to."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from distributed import Client

from modelops.services.study_run import StudyRejected, StudyRun
from modelops.study import Study
from tests.helpers import REPO, clean_env

pytestmark = pytest.mark.cluster

MOPS = [sys.executable, "-m", "modelops.cli.main"]
N_TASKS = 8
SECONDS = 0.4
WARM = {"MODELOPS_EXECUTOR_TYPE": "isolated_warm"}
COLD = {"MODELOPS_EXECUTOR_TYPE": "cold"}


def sleep_study(**requires) -> Study:
    return Study(name="pools", bundle="faulty", requires=requires,
                 parameters=[{"fault": "sleep", "seconds": SECONDS, "i": i} for i in range(N_TASKS)])


def roll_to_warm(cluster, cold_proc) -> None:
    """What `helm upgrade` to isolated_warm does: the new pod comes up, then the old one gets SIGTERM."""
    cluster.start_worker(env=WARM, name="warm-after-upgrade")
    cluster.wait_for_workers(2)
    cold_proc.send_signal(signal.SIGTERM)
    cold_proc.wait(timeout=60)


def run_through_upgrade(cluster, tmp_path, wait_s: float, on_waiting=None):
    """StudyRun of sleep_study() on `cluster` (one cold worker), rolled to warm after 3 results; (lines said,
    the outcome or the StudyRejected raised, the results file's records)."""
    lines: list[str] = []
    cold_proc = cluster.workers[0]

    def say(line: str) -> None:
        lines.append(line)
        if on_waiting and line.startswith("waiting for workers of ") and len(
                [x for x in lines if x.startswith("waiting for workers of ")]) == 1:
            on_waiting()

    def on_result(_result) -> None:
        if on_result.seen == 3:
            roll_to_warm(cluster, cold_proc)
        on_result.seen += 1

    on_result.seen = 0
    output = tmp_path / "results.jsonl"
    with Client(cluster.address) as client:
        run = StudyRun(client, sleep_study(), output=str(output), progress=False, say=say, max_in_flight=2,
                       chunk_size=1, on_result=on_result, worker_wait_s=wait_s)
        try:
            outcome = run.run()
        except StudyRejected as exc:
            outcome = exc
    records = [json.loads(line) for line in output.read_text().splitlines()]
    return lines, outcome, records


def test_a_study_whose_executor_goes_away_waits_naming_the_change_then_fails_at_the_bound(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=1, nthreads=2, **COLD)
    lines, outcome, records = run_through_upgrade(cluster, tmp_path, wait_s=3)
    assert isinstance(outcome, StudyRejected), f"the study did not fail: {outcome!r}, said {lines}"
    message = str(outcome)
    assert "no connected worker served executor cold for 3 s (the bound, --wait-workers)" in message
    assert "started on cold (group default)" in message and "connected now run isolated_warm (group default)" in message
    assert "executor: cold (pinned at start; --any-executor to allow others), group: default" in lines, lines
    waiting = [line for line in lines if line.startswith("waiting for workers of executor cold: 0 ready")]
    assert waiting and "the study started on cold (group default); connected now: isolated_warm (group default)" \
        in waiting[0], lines
    # what arrived is written, and only cold ran: none of its tasks went to the warm worker
    assert 3 <= len(records) < N_TASKS
    assert {r["provenance"]["executor"] for r in records} == {"cold"}
    # resuming it while only warm workers are there keeps to cold too: refused at once, nothing mixed in
    with Client(cluster.address) as client, pytest.raises(StudyRejected) as resumed:
        StudyRun(client, sleep_study(), output=str(tmp_path / "results.jsonl"), resume=True, progress=False,
                 say=lines.append, worker_wait_s=3).run()
    assert "no connected worker provides executor 'cold'" in str(resumed.value)
    assert "the executor of the results already in --output" in str(resumed.value)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(records)


def test_a_worker_of_the_executor_coming_back_within_the_bound_finishes_the_study_on_it(cluster_factory, tmp_path):
    cluster = cluster_factory(n_workers=1, nthreads=2, **COLD)
    lines, outcome, records = run_through_upgrade(
        cluster, tmp_path, wait_s=120, on_waiting=lambda: cluster.start_worker(env=COLD, name="cold-again"))
    assert not isinstance(outcome, StudyRejected), outcome
    assert outcome.complete and outcome.summary.by_executor == {"cold": N_TASKS}
    assert any(line.startswith("workers ready after ") for line in lines), lines
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == N_TASKS and len({r["task_id"] for r in ok}) == N_TASKS  # each exactly once
    assert {r["provenance"]["executor"] for r in records} == {"cold"}


def mops_run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*MOPS, "run", *args], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_a_study_requiring_cold_through_the_upgrade_fails_with_the_bound_instead_of_hanging(cluster_factory,
                                                                                            tmp_path):
    """The case seen on the cluster: `mops run --require-executor cold` hung at 18/20 with no message. The warm
    worker of the upgrade is up from the start (the study requires cold, so it is not refused), and the cold
    worker gets SIGTERM once two results are written."""
    cluster = cluster_factory(n_workers=1, nthreads=2, **COLD)
    cold_proc = cluster.start_worker(env=WARM, name="warm-after-upgrade") and cluster.workers[0]
    cluster.wait_for_workers(2)
    study, output = tmp_path / "study.json", tmp_path / "results.jsonl"
    study.write_text(json.dumps(sleep_study().model_dump(mode="json", exclude_none=True)))
    proc = subprocess.Popen([*MOPS, "run", str(study), "--scheduler", cluster.address, "--require-executor", "cold",
                             "--output", str(output), "--max-in-flight", "2", "--chunk-size", "1",
                             "--wait-workers", "3", "--progress", "none"],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not output.exists() or len(output.read_text().splitlines()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the study ended before the upgrade"
            time.sleep(0.05)
        cold_proc.send_signal(signal.SIGTERM)
        cold_proc.wait(timeout=60)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stdout + stderr
    assert "waiting for workers of executor cold: 0 ready" in stdout, stdout
    assert "no connected worker served executor cold for 3 s" in stderr and "isolated_warm" in stderr, stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert 2 <= len(records) < N_TASKS and {r["provenance"]["executor"] for r in records} == {"cold"}


def test_several_executors_at_start_refuse_a_study_without_a_choice_and_any_executor_runs_it(cluster_factory,
                                                                                             tmp_path):
    cluster = cluster_factory(n_workers=1, nthreads=1, **COLD)
    cluster.start_worker(env={**WARM, "MODELOPS_WORKER_GROUP": "fast"})
    cluster.wait_for_workers(2)
    study = tmp_path / "study.json"
    many = Study(name="mixed", bundle="faulty", parameters=[{"fault": "sleep", "seconds": 0.2, "i": i}
                                                            for i in range(12)])
    study.write_text(json.dumps(many.model_dump(mode="json", exclude_none=True)))
    refused = mops_run(str(study), "--scheduler", cluster.address)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "workers of several executors could run it: cold (group default), isolated_warm (group fast)" \
        in refused.stderr
    assert "--require-executor cold|isolated_warm" in refused.stderr and "--any-executor" in refused.stderr
    anywhere = mops_run(str(study), "--scheduler", cluster.address, "--any-executor", "--max-in-flight", "12",
                        "--chunk-size", "1")
    assert anywhere.returncode == 0, anywhere.stdout + anywhere.stderr
    said = "executor: any (--any-executor: tasks may run on workers of any executor), group: default, fast"
    assert Counter(anywhere.stdout.splitlines())[said] == 2  # once at the start, once in the summary
    assert "tasks per executor: {" in anywhere.stdout
