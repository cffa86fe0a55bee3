"""Issue 6 in containers: a worker container killed with -9 mid-study, and cold worker containers
replaced by warm ones mid-study as a `helm upgrade` would. No result is lost or doubled, and each
result's provenance names the executor that really ran it."""

from __future__ import annotations

from collections import Counter

import pytest
from container_support import VALUES, Containers, _free_ports, docker, render, start_cluster, start_workers
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study

pytestmark = pytest.mark.container

N_TASKS = 200


def sir_study() -> Study:
    # ~10-20 ms per task (a long epidemic), so a study of 200 lasts long enough to be hit mid-way
    return Study(name="reliability", bundle="sir", replicates=4, base_seed=7,
                 parameters=[{"beta": 0.2 + 0.005 * i, "gamma": 0.1, "days": 2500} for i in range(N_TASKS // 4)])


def extra_workers(image: str, containers: Containers, sets: list[str]):
    """More worker containers from the same chart, on their own health port (host networking)."""
    (port,) = _free_ports(1)
    return start_workers(render([VALUES / "cold.yaml"], [*sets, f"worker.healthPort={port}"]), image, containers)


def run_with_hit(address: str, after: int, hit, max_in_flight: int | None = None) -> tuple[list, dict]:
    with Client(address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("sir")
        seen = []

        def on_result(result):
            seen.append(result)
            if len(seen) == after:
                hit()

        tasks = sir_study().tasks(bundle["digest"], bundle["entrypoint"])
        results = service.run(tasks, on_result=on_result, max_in_flight=max_in_flight)
        return results, service.worker_runtime()


def assert_exactly_once(results) -> None:
    assert len(results) == N_TASKS and len({r.task_id for r in results}) == N_TASKS
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]


def test_kill_9_of_a_worker_container_mid_study(image, chart, containers):
    cluster = start_cluster(render([VALUES / "cold.yaml"]), image, containers)
    victim = extra_workers(image, containers, [])[0]
    results, _ = run_with_hit(cluster.address, 40, lambda: docker("kill", "-s", "KILL", victim.name))
    assert containers.state(victim.name)["ExitCode"] == 137
    assert_exactly_once(results)
    assert {r.provenance.executor for r in results} == {"cold"}
    # each container has its own PID namespace: a process is (worker, pid)
    assert len({(r.provenance.worker, r.provenance.pid) for r in results}) == N_TASKS


def test_executor_switch_mid_study_keeps_true_provenance(image, chart, containers):
    cluster = start_cluster(render([VALUES / "cold.yaml"]), image, containers)
    old = cluster.workers

    def roll():
        # the upgraded Deployment's pods come up with the new env, then the old pods get SIGTERM
        extra_workers(image, containers, ["worker.executor.type=isolated_warm"])
        for worker in old:
            docker("stop", "--time", "30", worker.name, timeout=60)

    # few tasks in flight, so what the old workers have not started yet goes to the new ones
    results, runtimes = run_with_hit(cluster.address, 30, roll, max_in_flight=4)
    assert_exactly_once(results)
    by_executor = Counter(r.provenance.executor for r in results)
    assert by_executor["cold"] >= 30 and by_executor["isolated_warm"] > 0
    cold_pids = [(r.provenance.worker, r.provenance.pid) for r in results if r.provenance.executor == "cold"]
    warm_pids = [(r.provenance.worker, r.provenance.pid) for r in results if r.provenance.executor == "isolated_warm"]
    assert len(set(cold_pids)) == len(cold_pids)
    assert len(set(warm_pids)) < len(warm_pids)
    assert [i["executor"] for i in runtimes.values()] == ["isolated_warm"]
    for worker in old:
        assert containers.state(worker.name)["ExitCode"] == 0
        assert "Executor: cold" in containers.logs(worker.name)
