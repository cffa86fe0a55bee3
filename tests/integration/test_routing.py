"""A study that requires an executor or a worker group runs only on workers whose own environment
provides it (Dask worker resources advertised by each worker's plugin), including workers that join
later; if none is connected, the run fails at once naming what is missing and the groups there are."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from distributed import Client

from modelops.routing import NoWorkerForRequirement, Requirement
from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study

pytestmark = pytest.mark.cluster


def sir_tasks(service, requirement, n=12, days=400, gamma=0.1):
    bundle = service.resolve_bundle("sir", requirement)
    study = Study(name="route", bundle="sir", parameters=[{"beta": 0.3, "gamma": gamma, "days": days}],
                  replicates=n)
    return study.tasks(bundle["digest"], bundle["entrypoint"])


@pytest.fixture
def mixed(cluster_factory):
    """A warm worker (group default) and a cold one (group cold), as values/production.yaml has."""
    cluster = cluster_factory(n_workers=1, nthreads=2, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_WORKER_GROUP": "cold"})
    cluster.wait_for_workers(2)
    return cluster


@pytest.mark.parametrize("requirement, executor, group", [
    (Requirement(executor="cold"), "cold", "cold"),
    (Requirement(group="default"), "isolated_warm", "default"),
    (Requirement(executor="isolated_warm", group="default"), "isolated_warm", "default"),
])
def test_required_tasks_run_only_where_required(mixed, requirement, executor, group):
    with Client(mixed.address) as client:
        service = DaskSimulationService(client)
        results = service.run(sir_tasks(service, requirement), requirement=requirement)
    assert all(r.ok for r in results)
    assert {(r.provenance.executor, r.provenance.worker_group) for r in results} == {(executor, group)}


def test_no_requirement_keeps_using_every_worker(mixed):
    with Client(mixed.address) as client:
        service = DaskSimulationService(client)
        results = service.run(sir_tasks(service, None, n=40, days=4000), max_in_flight=40)
    assert {r.provenance.worker_group for r in results} == {"default", "cold"}


def test_a_requirement_no_worker_meets_fails_at_once_naming_it_and_the_groups(mixed):
    with Client(mixed.address) as client:
        service = DaskSimulationService(client)
        t0 = time.monotonic()
        with pytest.raises(NoWorkerForRequirement) as err:
            service.run([], requirement=Requirement(executor="cold", group="default"))
        assert time.monotonic() - t0 < 30
    message = str(err.value)
    assert "executor 'cold' in group 'default'" in message
    assert "default (isolated_warm)" in message and "cold (cold)" in message


def test_workers_joining_later_take_required_tasks(mixed):
    """A second cold worker started mid-study gets some of the study's cold tasks. Dask does not
    steal restricted tasks, so tasks already handed to a worker stay there; the ones submitted
    after the new worker joined (the in-flight bound keeps submitting) can go to it."""
    requirement = Requirement(group="cold")
    with Client(mixed.address) as client:
        service = DaskSimulationService(client)
        tasks = sir_tasks(service, requirement, n=80, days=40000, gamma=0.0)  # ~0.2 s each
        seen = []
        started = threading.Event()

        def on_result(result):
            seen.append(result)
            if len(seen) == 2 and not started.is_set():
                started.set()
                mixed.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_WORKER_GROUP": "cold"},
                                   name="late-cold")

        results = service.run(tasks, requirement=requirement, on_result=on_result, max_in_flight=4)
    assert {r.provenance.worker_group for r in results} == {"cold"}
    assert len({r.provenance.worker for r in results}) == 2, "the worker that joined later got no task"


def test_mops_run_group_option_fails_naming_the_missing_group(mixed, tmp_path, repo_root=None):
    from pathlib import Path

    study = Path(__file__).resolve().parents[2] / "examples" / "sir" / "study.json"
    proc = subprocess.run([sys.executable, "-m", "modelops.cli.main", "run", str(study), "--scheduler", mixed.address,
                           "--group", "gpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "group 'gpu'" in proc.stderr and "cold (cold)" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "modelops.cli.main", "run", str(study), "--scheduler", mixed.address,
                           "--group", "cold"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tasks per executor: {'cold': 12}" in proc.stdout, proc.stdout
