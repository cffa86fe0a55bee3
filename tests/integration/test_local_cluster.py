"""Workers choose their executor from their own env; a client cannot change it; bad env stops a worker."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from modelops.worker.plugin import ModelOpsWorkerPlugin

pytestmark = pytest.mark.cluster


def native_study(n: int) -> Study:
    return Study(name="native", bundle="native_counter", parameters=[{"i": i} for i in range(n)])


def run_native(address: str, n: int):
    with Client(address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("native_counter")
        results = service.run(native_study(n).tasks(bundle["digest"], bundle["entrypoint"]))
        return results, service.worker_runtime()


def child_pid_lines(logs: list[str]) -> set[int]:
    return {int(m) for text in logs for m in re.findall(r"Child process PID (\d+)", text)}


@pytest.mark.parametrize(
    "env",
    [
        {"MODELOPS_EXECUTOR_TYPE": "cold"},
        {"MODELOPS_EXECUTOR": "cold"},
        {"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_COLD_START": "spawn"},
    ],
    ids=["EXECUTOR_TYPE", "EXECUTOR-synonym", "spawn"],
)
def test_cold_workers_log_cold_and_give_each_task_its_own_process(cluster_factory, env):
    cluster = cluster_factory(n_workers=2, **env)
    results, runtimes = run_native(cluster.address, 12)
    logs = cluster.worker_logs()
    cold_start = env.get("MODELOPS_COLD_START", "fork")
    for text in logs:
        assert "Executor: cold" in text and "Bundle source: file" in text
        assert f"Cold start: {cold_start}" in text
        assert "isolated_warm" not in text
    assert all(r.ok for r in results), [r.error for r in results]
    pids = [r.provenance.pid for r in results]
    assert len(set(pids)) == len(results) == 12
    assert all(r.outputs["native_calls"] == 1 for r in results)
    assert set(pids) <= child_pid_lines(logs)
    assert {info["executor"] for info in runtimes.values()} == {"cold"}
    assert {r.provenance.executor for r in results} == {"cold"}


def test_a_client_registering_the_plugin_again_does_not_change_the_executor(cluster_factory):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="cold")
    with Client(cluster.address) as client:
        # a client whose own environment asks for another executor registers the plugin twice
        import os

        os.environ["MODELOPS_EXECUTOR_TYPE"] = "direct"
        try:
            client.register_plugin(ModelOpsWorkerPlugin())
            service = DaskSimulationService(client)
            runtimes = service.worker_runtime()
            bundle = service.resolve_bundle("native_counter")
            results = service.run(native_study(4).tasks(bundle["digest"], bundle["entrypoint"]))
        finally:
            del os.environ["MODELOPS_EXECUTOR_TYPE"]
    assert [info["executor"] for info in runtimes.values()] == ["cold"]
    assert len({r.provenance.pid for r in results}) == 4
    assert {r.provenance.executor for r in results} == {"cold"}


def test_warm_workers_reuse_their_children(cluster_factory):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    results, runtimes = run_native(cluster.address, 6)
    assert "Executor: isolated_warm" in cluster.worker_logs()[0]
    pids = [r.provenance.pid for r in results]
    assert len(set(pids)) == 1
    assert sorted(r.outputs["native_calls"] for r in results) == [1, 2, 3, 4, 5, 6]


def test_workers_in_one_cluster_can_run_different_executors(cluster_factory):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_WORKER_GROUP="leaky")
    cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "isolated_warm", "MODELOPS_WORKER_GROUP": "fast"})
    cluster.wait_for_workers(2)
    results, runtimes = run_native(cluster.address, 10)
    by_group = {info["worker_group"]: info["executor"] for info in runtimes.values()}
    assert by_group == {"leaky": "cold", "fast": "isolated_warm"}
    for r in results:
        assert r.provenance.executor == by_group[r.provenance.worker_group]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MODELOPS_EXECUTOR_TYPE": "clod"},
         "MODELOPS_EXECUTOR_TYPE='clod' is invalid: allowed one of direct, isolated_warm, cold"),
        ({"MODELOPS_EXECUTOR_TYPE": "cold", "MODELOPS_EXECUTOR": "direct"}, "disagree"),
        ({"MODELOPS_TASK_TIMEOUT_SECONDS": "soon"}, "MODELOPS_TASK_TIMEOUT_SECONDS='soon' is invalid"),
    ],
    ids=["clod", "disagreeing-synonyms", "bad-timeout"],
)
def test_a_worker_with_a_bad_env_exits_non_zero_naming_the_variable(cluster_factory, env, expected):
    cluster = cluster_factory(n_workers=0)
    worker = cluster.start_worker(env=env)
    assert worker.wait(timeout=60) != 0
    assert expected in cluster.worker_logs()[-1]
    with Client(cluster.address) as client:
        assert client.scheduler_info(n_workers=-1)["workers"] == {}


def test_a_worker_whose_preload_module_is_not_installed_exits_before_dask(cluster_factory, tmp_path):
    """A broken image (an unimportable preload module) stops the worker at the preload's import,
    with one line naming the module; before issue 11 it failed in setup(), after Dask started."""
    cluster = cluster_factory(n_workers=0)
    worker = cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "cold",
                                       "MODELOPS_COLD_PRELOAD_MODULES": "module_that_is_not_installed"})
    returncode = worker.wait(timeout=60)
    log = cluster.worker_logs()[-1]
    assert returncode != 0, log
    assert "invalid worker environment: MODELOPS_COLD_PRELOAD_MODULES" in log
    assert "'module_that_is_not_installed': not installed" in log
    assert "Start worker at" not in log  # Dask never started a worker


def test_log_level_comes_from_the_worker_env(cluster_factory):
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="isolated_warm", MODELOPS_LOG_LEVEL="debug")
    cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "isolated_warm", "MODELOPS_LOG_LEVEL": "INFO"})
    cluster.wait_for_workers(2)
    run_native(cluster.address, 6)
    debug_log, info_log = cluster.worker_logs()
    assert re.search(r"DEBUG - Task sim-\w+ ok on PID \d+", debug_log)
    assert "DEBUG" not in info_log and "Executor: isolated_warm" in info_log


def test_plugin_registered_again_while_studies_run_fails_no_task(cluster_factory):
    """distributed's plugin_add tears the old plugin down before the new one's setup() ends.
    Tasks must never notice: the runtime lives on the worker, not on the plugin object.
    Registered with idempotent=False, as a client without the flag (or an older one) would."""
    from distributed.protocol.pickle import dumps

    from modelops.worker.runtime import PLUGIN_NAME

    cluster = cluster_factory(n_workers=2, nthreads=2, MODELOPS_EXECUTOR_TYPE="isolated_warm")
    stop = threading.Event()
    registrations = []

    def register_repeatedly():
        with Client(cluster.address) as other:
            while not stop.is_set():
                other.sync(
                    other.scheduler.register_worker_plugin,
                    plugin=dumps(ModelOpsWorkerPlugin()), name=PLUGIN_NAME, idempotent=False,
                )
                registrations.append(1)

    registrar = threading.Thread(target=register_repeatedly)
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("faulty")
        study = Study(name="busy", bundle="faulty", parameters=[{"i": i} for i in range(1500)])
        registrar.start()
        try:
            results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]))
        finally:
            stop.set()
            registrar.join()
    assert len(registrations) >= 5
    failed = [r.error for r in results if not r.ok]
    assert failed == [], failed[:3]


def test_a_study_waits_on_its_own_clients_loop_not_the_last_client_made(cluster_factory):
    """`as_completed()` without a loop takes the default client's, the last one made in the process (the
    throughput bench holds a TCP and a TLS client): with that loop stuck, a study of the first client hung."""
    cluster = cluster_factory(n_workers=1, MODELOPS_EXECUTOR_TYPE="direct")
    stuck = threading.Event()
    with Client(cluster.address) as mine, Client(cluster.address) as last, ThreadPoolExecutor(1) as pool:
        assert mine.loop is not last.loop
        service = DaskSimulationService(mine)
        bundle = service.resolve_bundle("native_counter")
        last.loop.add_callback(stuck.wait, 120)
        try:
            # a bound on a hang, not a speed check: the study takes well under a second
            results = pool.submit(service.run, native_study(4).tasks(bundle["digest"], bundle["entrypoint"])).result(
                timeout=60)
        finally:
            stuck.set()
    assert [r.ok for r in results] == [True] * 4
