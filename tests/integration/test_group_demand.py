"""Worker groups scaling from zero, on real local Dask processes: the scheduler (with modelops' preload and
the release's groups in its environment, as the chart sets them) serves each group's demand, and a study
requiring a group with no worker waits for it (workers started later stand in for the autoscaler), while
a group the release lacks fails at once naming the release's groups."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from distributed import Client

from modelops.local_cluster import LocalProcessCluster
from modelops.routing import Requirement
from modelops.services.dask_simulation import DaskSimulationService
from modelops.services.study_run import StudyRejected, StudyRun
from modelops.jobs.status import runner_waiting
from modelops.services.worker_wait import WorkersNotReady
from modelops.settings import WORKER_GROUPS_VARIABLE
from modelops.study import Study

pytestmark = pytest.mark.cluster

GROUPS = [
    {"name": "default", "executor": "isolated_warm", "nworkers": 1, "nthreads": 2, "min": 1, "max": 1},
    {"name": "cold", "executor": "cold", "nworkers": 1, "nthreads": 2, "min": 0, "max": 4},
]
COLD_ENV = {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_WORKER_GROUP": "cold"}


@pytest.fixture
def release(bundles_dir, tmp_path):
    """The scheduler knows groups default and cold; only a default (warm) worker is connected: cold is at zero."""
    cluster = LocalProcessCluster(n_workers=1, nthreads=2, log_dir=tmp_path / "cluster",
                                  env={"MODELOPS_BUNDLES_DIR": str(bundles_dir)},
                                  scheduler_env={WORKER_GROUPS_VARIABLE: json.dumps(GROUPS)})
    with cluster:
        yield cluster


def sir_study(n: int, **requires) -> Study:
    return Study(name="scale", bundle="sir", parameters=[{"beta": 0.3, "gamma": 0.1, "days": 200}], replicates=n,
                 requires=Requirement(**requires))


def http_get(client: Client, path: str) -> str:
    port = client.scheduler_info()["services"]["dashboard"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


def test_demand_per_group_from_queued_tasks_json_metrics_and_mops_demand(release):
    with Client(release.address) as client:
        service = DaskSimulationService(client)
        before = service.group_demand()
        assert before["cold"]["desired"] == 0 and before["default"]["desired"] == 1  # its min
        assert before["default"]["ready"] == 1 and before["cold"]["ready"] == 0
        bundle = service.resolve_bundle("sir")
        cold = Requirement(group="cold")
        futures = service.submit_many(list(sir_study(6).tasks(bundle["digest"], bundle["entrypoint"])),
                                      requirement=cold)
        deadline = time.monotonic() + 30
        while service.group_demand()["cold"]["tasks"] < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        demand = service.group_demand()["cold"]
        assert (demand["tasks"], demand["desired"], demand["ready"]) == (6, 3, 0)  # ceil(6 / 2 slots)
        served = json.loads(http_get(client, "/modelops/demand"))
        assert served["groups"]["cold"]["desired"] == 3 and served["groups"]["default"]["tasks"] == 0
        metrics = http_get(client, "/metrics")
        assert 'modelops_group_desired_workers{group="cold"} 3.0' in metrics
        assert 'modelops_group_ready_workers{group="cold"} 0.0' in metrics
        proc = subprocess.run([sys.executable, "-m", "modelops.cli.main", "demand", "--scheduler", release.address],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
        assert rows["group"][:4] == ["group", "executor", "ready", "desired"]
        assert rows["cold"][1:7] == ["cold", "0", "3", "0", "4", "6"]

        release.start_worker(env=COLD_ENV, name="cold-0")  # the autoscaler's pod
        assert all(f.result(timeout=120)["status"] == "ok" for f in futures)
        del futures
        deadline = time.monotonic() + 30
        while service.group_demand()["cold"]["tasks"] and time.monotonic() < deadline:
            time.sleep(0.1)
        demand = service.group_demand()["cold"]
        assert (demand["tasks"], demand["desired"], demand["ready"]) == (0, 0, 1)


def test_a_study_requiring_a_group_at_zero_waits_for_its_workers(release):
    lines: list[str] = []
    started = threading.Event()

    desired: list[int] = []

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("waiting for workers of group cold") and not started.is_set():
            started.set()
            # what an autoscaler reads meanwhile: the waiting study already asks for one cold pod
            deadline = time.monotonic() + 10
            while not desired and time.monotonic() < deadline:
                if (wanted := DaskSimulationService(client).group_demand()["cold"]["desired"]) >= 1:
                    desired.append(wanted)
                time.sleep(0.1)
            release.start_worker(env=COLD_ENV, name="cold-late")

    with Client(release.address) as client:
        outcome = StudyRun(client, sir_study(6, group="cold"), progress=False, say=say).run()
    assert "waiting for workers of group cold: 0/1 ready" in lines, lines
    assert desired == [1]
    assert outcome.complete and outcome.summary.by_executor == {"cold": 6}
    # the runner's log as `mops jobs status` reads it: waiting while it waited, nothing once workers came
    waited = lines.index("waiting for workers of group cold: 0/1 ready")
    log = "\n".join(f"2026-12-03 12:00:00 {line}" for line in lines)
    assert runner_waiting("\n".join(lines[:waited + 1])) == "waiting for workers of group cold: 0/1 ready"
    assert any(line.startswith("workers ready after ") for line in lines[waited:]), lines
    assert runner_waiting(log) is None


def test_a_group_at_zero_that_never_comes_fails_after_the_bound(release):
    with Client(release.address) as client:
        t0 = time.monotonic()
        with pytest.raises(WorkersNotReady, match="group cold: 0/1 ready"):
            StudyRun(client, sir_study(2, executor="cold"), progress=False, say=lambda _: None,
                     worker_wait_s=2).run()
        assert time.monotonic() - t0 < 30


def test_a_group_the_release_lacks_fails_at_once_naming_the_release_groups(release):
    with Client(release.address) as client:
        t0 = time.monotonic()
        with pytest.raises(StudyRejected) as err:
            StudyRun(client, sir_study(2, group="gpu"), progress=False, say=lambda _: None).run()
        assert time.monotonic() - t0 < 30
    assert "group 'gpu'" in str(err.value)
    assert "cold (cold)" in str(err.value) and "default (isolated_warm)" in str(err.value)


def test_cpu_of_the_demand_per_10000_queued_tasks(release, record_property):
    """10,000 tasks queued for the cold group (no worker): what one computation costs the scheduler."""
    with Client(release.address) as client:
        futures = client.map(math.sqrt, range(10_000), resources={"modelops-group-cold": 1}, pure=False)
        service = DaskSimulationService(client)
        deadline = time.monotonic() + 60
        while service.group_demand()["cold"]["tasks"] < 10_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        costs = []
        for _ in range(5):
            report = client.sync(client.scheduler.modelops_demand)
            costs.append(report["cpu_seconds"])
        assert report["groups"]["cold"]["tasks"] == 10_000 and report["groups"]["cold"]["desired"] == 4
        del futures
    best = min(costs)
    record_property("demand_cpu_seconds_per_10k_tasks", best)
    print(f"demand computation: {best * 1000:.2f} ms CPU per 10,000 queued tasks (of 5: {costs})")
    assert best < 0.5
