"""Drain (`mops drain`, the worker pod's preStop hook): a worker being stopped finishes its running
tasks, takes no new ones, and hands back what it had not started; `attempt` in provenance counts
how many times a task was started, so a restart is visible."""

from __future__ import annotations

import json
import signal
import time

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from tests.helpers import executing, mops_drain, sleepy_study_in_background, start_victim

pytestmark = pytest.mark.cluster

N_TASKS = 8
SECONDS = 4.0


def run_study_and_stop_victim(cluster_factory, tmp_path, stop):
    """Two 2-thread warm workers; once the `victim` runs two tasks, `stop(victim_proc, victim_tmp)`."""
    cluster, victim_proc, victim_tmp = start_victim(cluster_factory, tmp_path)
    with Client(cluster.address) as client:
        victim, runner, out = sleepy_study_in_background(DaskSimulationService(client), N_TASKS, SECONDS)
        deadline = time.monotonic() + 60
        while executing(client, victim) < 2:
            assert time.monotonic() < deadline, "the victim never ran two tasks at once"
            time.sleep(0.05)
        stopped_at = time.time()
        info = stop(victim_proc, victim_tmp)
        runner.join(timeout=180)
        assert not runner.is_alive()
    results = out["results"]
    assert len(results) == N_TASKS and len({r.task_id for r in results}) == N_TASKS
    assert not [r.error for r in results if not r.ok]
    return results, victim, stopped_at, info


def test_drained_worker_finishes_running_tasks_and_takes_no_new_ones(cluster_factory, tmp_path):
    def stop(proc, tmp):
        t0 = time.monotonic()
        drained = mops_drain(tmp)
        took = time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)  # what the kubelet does once preStop returns
        proc.wait(timeout=30)
        return drained, took

    results, victim, stopped_at, (drained, took) = run_study_and_stop_victim(cluster_factory, tmp_path, stop)
    assert drained.returncode == 0, drained.stderr
    (report,) = [json.loads(line) for line in drained.stdout.splitlines()]
    assert report["worker"] == victim
    assert report["running_at_start"] == 2 and report["unfinished"] == 0, report
    # no task was started twice: the victim's two running tasks finished there
    assert [r.provenance.attempt for r in results] == [1] * N_TASKS
    on_victim = [r for r in results if r.provenance.worker == victim]
    running_at_stop = [r for r in on_victim if r.provenance.started <= stopped_at]
    assert len(running_at_stop) >= 2
    assert all(r.provenance.started + r.provenance.duration_s > stopped_at for r in running_at_stop[-2:])
    # ... and the drained worker started nothing after the drain began
    assert not [r for r in on_victim if r.provenance.started > stopped_at + 0.5], on_victim
    assert took < SECONDS + 15, f"the drain took {took:.1f} s for tasks of {SECONDS} s"


def test_without_drain_sigterm_restarts_running_tasks_and_attempt_says_so(cluster_factory, tmp_path):
    """What the drain prevents: SIGTERM alone (dask worker's own handling) kills the running tasks,
    the scheduler starts them again elsewhere, and their provenance says attempt 2."""

    def stop(proc, tmp):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    results, victim, _, _ = run_study_and_stop_victim(cluster_factory, tmp_path, stop)
    restarted = [r for r in results if r.provenance.attempt == 2]
    assert len(restarted) >= 2, [(r.provenance.worker, r.provenance.attempt) for r in results]
    assert all(r.provenance.worker != victim for r in restarted)
    assert {r.provenance.attempt for r in results} <= {1, 2}
