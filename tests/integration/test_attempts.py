"""Provenance `attempt`: the scheduler's AttemptsPlugin counts each task's starts from the workers' start
reports on their batched streams (no round trip per task), the client asks once per batch of results, and
a key's count goes when the scheduler forgets the key."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from distributed import Client

import modelops.local_cluster
from modelops.scheduler import PRELOAD
from modelops.scheduler.attempts import PLUGIN_NAME
from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from tests.helpers import sleepy_study_in_background

pytestmark = pytest.mark.cluster

SECONDS = 3.0


def executing(client: Client, address: str) -> list[str]:
    return client.run(lambda dask_worker: sorted(str(ts.key) for ts in dask_worker.state.executing),
                      workers=[address])[address]


def counts_held(client: Client, wait_s: float = 10.0) -> int:
    """Keys the scheduler still holds counts for, once the released futures' keys had time to be forgotten
    (a release reaches the scheduler on the client's batched stream)."""
    deadline = time.monotonic() + wait_s
    while True:
        held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.plugins[PLUGIN_NAME].starts))
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def test_a_task_restarted_after_its_worker_is_killed_says_2_and_one_assigned_but_never_started_says_1(
        cluster_factory):
    cluster = cluster_factory(n_workers=1, nthreads=1, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    victim_proc = cluster.start_worker(env={"MODELOPS_WORKER_GROUP": "victim"})
    cluster.wait_for_workers(2)
    with Client(cluster.address) as client:
        victim, runner, out = sleepy_study_in_background(DaskSimulationService(client), 4, SECONDS)
        deadline = time.monotonic() + 60
        while not (running := executing(client, victim)):
            assert time.monotonic() < deadline, "the victim never started a task"
            time.sleep(0.05)
        time.sleep(0.3)  # its start report is on the scheduler (batched every few ms)
        os.killpg(victim_proc.pid, signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive()
        results = out["results"]
        assert len(results) == 4 and all(r.ok for r in results), [r.error for r in results]
        by_id = {r.task_id: r for r in results}
        (killed,) = running  # one thread: one task was running on the victim when it died
        assert by_id[killed].provenance.attempt == 2
        assert by_id[killed].provenance.worker != victim
        # every other task was started once: the one the victim held queued (worker-saturation gives a
        # 1-thread worker two tasks) was assigned to it but never started there
        assert sorted(r.provenance.attempt for r in results if r.task_id != killed) == [1, 1, 1]
        assert counts_held(client) == 0  # the counts went with the released keys


def test_counts_of_many_tasks_are_1_and_are_forgotten_with_their_keys(cluster_factory):
    cluster = cluster_factory(n_workers=2, nthreads=2, MODELOPS_EXECUTOR_TYPE="direct")
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("faulty")
        study = Study(name="many", bundle="faulty", parameters=[{"i": i} for i in range(300)])
        results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]), max_in_flight=60)
        assert len(results) == 300 and {r.provenance.attempt for r in results} == {1}
        assert counts_held(client) == 0


def test_a_scheduler_without_the_preload_leaves_attempt_none_with_one_warning_and_keeps_its_workers(
        cluster_factory, monkeypatch, caplog):
    # a scheduler started without modelops' preload (a plain `dask scheduler`): "json" has no dask_setup
    monkeypatch.setattr(modelops.local_cluster, "SCHEDULER_PRELOAD", "json")
    cluster = cluster_factory(n_workers=2, MODELOPS_EXECUTOR_TYPE="direct")
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("faulty")
        study = Study(name="plain", bundle="faulty", parameters=[{"i": i} for i in range(40)])
        with caplog.at_level(logging.WARNING, logger="modelops.service"):
            results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]))
            again = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]))
        assert len(results) == len(again) == 40 and all(r.ok for r in results + again)
        assert {r.provenance.attempt for r in results + again} == {None}
        warnings = [r.getMessage() for r in caplog.records if "does not count task starts" in r.getMessage()]
        assert len(warnings) == 1 and PRELOAD in warnings[0], warnings
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2  # no worker lost its stream
