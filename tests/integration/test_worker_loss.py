"""Losing a worker mid-study (kill -9, or SIGTERM as a pod eviction) loses no result."""

from __future__ import annotations

import os
import signal
import time

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from tests.helpers import pid_alive

pytestmark = pytest.mark.cluster

N_TASKS = 200


def sleepy_tasks(service: DaskSimulationService):
    bundle = service.resolve_bundle("faulty")
    study = Study(name="loss", bundle="faulty",
                  parameters=[{"fault": "sleep", "seconds": 0.05, "i": i} for i in range(N_TASKS)])
    return study.tasks(bundle["digest"], bundle["entrypoint"])


def run_and_hit(cluster, hit, after: int):
    """Run the study; call `hit()` once `after` results are in. Returns results and the victim's address."""
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        victim = next(a for a, i in service.worker_runtime().items() if i["worker_group"] == "victim")
        seen = []

        def on_result(result):
            seen.append(result)
            if len(seen) == after:
                hit()

        results = service.run(sleepy_tasks(service), on_result=on_result)
    return results, victim


def assert_every_result_exactly_once(results):
    assert len(results) == N_TASKS
    assert len({r.task_id for r in results}) == N_TASKS
    failed = [r.error for r in results if not r.ok]
    assert not failed, failed
    assert sorted(r.params["i"] for r in results) == list(range(N_TASKS))


def cluster_with_victim(cluster_factory, executor: str):
    """Two 2-thread workers with the same executor; the second (group `victim`) will be hit."""
    cluster = cluster_factory(n_workers=1, nthreads=2, MODELOPS_EXECUTOR_TYPE=executor, MODELOPS_COLD_START="spawn")
    cluster.start_worker(env={"MODELOPS_WORKER_GROUP": "victim"})
    cluster.wait_for_workers(2)
    return cluster, cluster.workers[1]


@pytest.mark.parametrize("executor", ["isolated_warm", "cold"])
def test_kill_9_of_a_worker_mid_study(cluster_factory, executor):
    cluster, victim_proc = cluster_with_victim(cluster_factory, executor)
    results, victim = run_and_hit(cluster, lambda: os.killpg(victim_proc.pid, signal.SIGKILL), after=40)
    assert victim_proc.wait(timeout=10) == -signal.SIGKILL
    assert_every_result_exactly_once(results)
    on_victim = [r for r in results if r.provenance.worker == victim]
    assert 0 < len(on_victim) < N_TASKS
    # the killed worker's children notice their parent is gone and exit: no orphans keep running
    victim_children = {r.provenance.pid for r in on_victim}
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in victim_children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in victim_children if pid_alive(p)]


@pytest.mark.parametrize("executor", ["isolated_warm", "cold"])
def test_sigterm_retires_a_worker_within_the_grace_period(cluster_factory, executor):
    cluster, victim_proc = cluster_with_victim(cluster_factory, executor)
    sent = []

    def terminate():
        sent.append(time.monotonic())
        victim_proc.send_signal(signal.SIGTERM)

    results, victim = run_and_hit(cluster, terminate, after=40)
    victim_proc.wait(timeout=30)
    assert victim_proc.returncode is not None
    assert_every_result_exactly_once(results)
    log = cluster.worker_logs()[1]
    assert "Executor: " + executor in log
