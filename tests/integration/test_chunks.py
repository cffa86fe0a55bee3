"""Short tasks several to a Dask task (`run_chunk`, issue 23 item 2), with every per-task guarantee kept:
each task's own result, seed, outputs, failure and `attempt`; cold forks a child per task; a chunk lost
with its worker completes exactly once; a worker drained mid-chunk hands back the tasks it did not run and
keeps the results of those it did."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from tests.helpers import executing, mops_drain, sleepy_study_in_background, start_victim

pytestmark = pytest.mark.cluster


def spy_chunks(service: DaskSimulationService) -> list[int]:
    """The sizes of the chunks `service` submits from here on."""
    sizes: list[int] = []
    submit = service.submit_chunks

    def recording(chunks, *args, **kwargs):
        sizes.extend(len(c) for c in chunks)
        return submit(chunks, *args, **kwargs)

    service.submit_chunks = recording
    return sizes


def by_task(results) -> dict:
    return {r.task_id: r for r in results}


def test_chunked_results_are_the_per_task_results_of_chunk_size_1_and_cold_forks_a_child_per_task(
        cluster_factory):
    cluster = cluster_factory(n_workers=2, nthreads=2, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_COLD_START="fork")
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("sir")
        study = Study(name="same", bundle="sir", base_seed=7, replicates=15,
                      parameters=[{"beta": b, "gamma": 0.1, "days": 40} for b in (0.2, 0.3, 0.4, 0.5)])
        tasks = list(study.tasks(bundle["digest"], bundle["entrypoint"]))
        one = by_task(service.run(tasks, chunk_size=1))
        sizes = spy_chunks(service)
        fixed = by_task(service.run(tasks, chunk_size=8))
        assert sizes and max(sizes) == 8
        del sizes[:]
        auto = by_task(service.run(tasks))
        assert sizes and max(sizes) > 1, "tasks of milliseconds were not put together"
    assert set(one) == set(fixed) == set(auto) == {t.task_id for t in tasks}
    for chunked in (fixed, auto):
        for task_id, r in one.items():
            c = chunked[task_id]
            assert c.ok and r.ok
            assert (c.seed, c.params, c.outputs) == (r.seed, r.params, r.outputs)
            assert c.provenance.attempt == 1
        # cold: one forked child per task, chunk or not (a PID is never reused within a worker here)
        pids = [(c.provenance.worker, c.provenance.pid) for c in chunked.values()]
        assert len(set(pids)) == len(pids)


@pytest.mark.parametrize("executor", ["direct", "isolated_warm"])
def test_one_failing_task_in_a_chunk_fails_alone(cluster_factory, executor):
    cluster = cluster_factory(n_workers=2, nthreads=2, MODELOPS_EXECUTOR_TYPE=executor)
    faults = {13: "exception", 27: "exit" if executor != "direct" else "not_a_dict"}
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("faulty")
        study = Study(name="one-fails", bundle="faulty",
                      parameters=[{"i": i, "fault": faults.get(i, "none")} for i in range(60)])
        sizes = spy_chunks(service)
        results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]), chunk_size=10)
    assert sizes == [10] * 6
    assert len(results) == 60 and len(by_task(results)) == 60
    failed = {r.params["i"]: r for r in results if not r.ok}
    assert set(failed) == set(faults), sorted(failed)
    assert failed[13].error.type == "ValueError"
    assert all(r.outputs["seed"] == r.seed for r in results if r.ok)
    assert {r.provenance.attempt for r in results} == {1}


def run_chunks_and_hit(cluster, hit, n_tasks: int, seconds: float, chunk: int):
    """Run sleeping tasks `chunk` to a Dask task; once the victim runs two chunks, `hit()`."""
    with Client(cluster.address) as client:
        victim, runner, out = sleepy_study_in_background(DaskSimulationService(client), n_tasks, seconds,
                                                         chunk_size=chunk)
        deadline = time.monotonic() + 60
        while executing(client, victim) < 2:
            assert time.monotonic() < deadline, "the victim never ran two chunks at once"
            time.sleep(0.05)
        time.sleep(seconds * 1.5)  # each chunk is past its first task
        hit_at = time.time()
        info = hit()
        runner.join(timeout=180)
        assert not runner.is_alive()
    results = out["results"]
    assert len(results) == n_tasks and len(by_task(results)) == n_tasks  # every task exactly once
    assert not [r.error for r in results if not r.ok]
    assert sorted(r.params["i"] for r in results) == list(range(n_tasks))
    return results, victim, hit_at, info


def test_a_chunk_whose_worker_is_killed_mid_chunk_completes_exactly_once(cluster_factory, tmp_path):
    cluster, victim_proc, _ = start_victim(cluster_factory, tmp_path, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    results, victim, killed_at, _ = run_chunks_and_hit(
        cluster, lambda: os.killpg(victim_proc.pid, signal.SIGKILL), n_tasks=40, seconds=0.3, chunk=8)
    assert victim_proc.wait(timeout=10) == -signal.SIGKILL
    # the victim's results went with it: its chunks ran again elsewhere, and the tasks they had started
    # there say so, per task (the chunk's other tasks say 1)
    assert not [r for r in results if r.provenance.worker == victim]
    restarted = [r for r in results if r.provenance.attempt == 2]
    assert 2 <= len(restarted) < 40, [(r.params["i"], r.provenance.attempt) for r in results]
    assert {r.provenance.attempt for r in results} == {1, 2}


def test_a_worker_drained_mid_chunk_keeps_finished_results_and_hands_back_the_rest(cluster_factory, tmp_path):
    cluster, victim_proc, victim_tmp = start_victim(cluster_factory, tmp_path, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    seconds = 0.4

    def drain():
        drained = mops_drain(victim_tmp)
        ended = time.time()
        victim_proc.send_signal(signal.SIGTERM)  # what the kubelet does once preStop returns
        victim_proc.wait(timeout=30)
        return drained, ended

    results, victim, _, (drained, ended) = run_chunks_and_hit(
        cluster, drain, n_tasks=40, seconds=seconds, chunk=10)
    assert drained.returncode == 0, drained.stderr
    (report,) = [json.loads(line) for line in drained.stdout.splitlines()]
    assert report["worker"] == victim and report["running_at_start"] == 2 and report["unfinished"] == 0, report
    # a chunk stops after the task it is running: the drain waits for one task, not for the chunk's rest
    assert report["waited_s"] < 3 * seconds, report
    draining_from = ended - report["waited_s"]  # `mops drain` itself takes a while to start
    on_victim = [r for r in results if r.provenance.worker == victim]
    assert len(on_victim) >= 2 * 2  # two chunks ran there, each past its first task: their results are kept
    late = [r.provenance.started - draining_from for r in on_victim if r.provenance.started > draining_from + 0.1]
    assert not late, f"tasks started on the drained worker this long after the drain began: {late}"
    # nothing was started twice: the tasks handed back had not been started
    assert {r.provenance.attempt for r in results} == {1}
