"""Executor metrics on a real Dask worker's /metrics: child start latency, zygote restarts,
fallbacks to spawn and task memory peaks, recorded in the worker process by its executor."""

from __future__ import annotations

import os
import signal
import urllib.request

import pytest
from distributed import Client
from prometheus_client.parser import text_string_to_metric_families

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study
from modelops.worker.task_bodies import describe_worker

pytestmark = pytest.mark.cluster

MIB = 2**20


def scrape(client: Client) -> dict[tuple[str, tuple], float]:
    """Every sample of the (only) worker's /metrics: (name, sorted labels) -> value."""
    (info,) = client.scheduler_info(n_workers=-1)["workers"].values()
    port = info["services"]["dashboard"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_study(service: DaskSimulationService, bundle_name: str, n: int, name: str) -> list:
    bundle = service.resolve_bundle(bundle_name)
    study = Study(name=name, bundle=bundle_name, parameters=[{"i": i} for i in range(n)])
    results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return results


def test_cold_fork_worker_exports_executor_metrics(cluster_factory):
    cluster = cluster_factory(
        n_workers=1, nthreads=2, worker_args=("--dashboard", "--dashboard-address", "127.0.0.1:0"),
        MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_COLD_START="fork",
    )
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        first = run_study(service, "native_counter", 6, "metrics-fork")
        (described,) = client.run(describe_worker).values()
        zygote = described["child_pids"][0]  # started by this test's worker: the zygote
        os.kill(zygote, signal.SIGKILL)
        second = run_study(service, "native_counter", 4, "metrics-after-restart")
        fallback = run_study(service, "threaded_import", 2, "metrics-threaded")
        samples = scrape(client)

    tasks = len(first) + len(second) + len(fallback)
    fork_count = value(samples, "modelops_child_start_seconds_count", start_method="fork")
    fork_sum = value(samples, "modelops_child_start_seconds_sum", start_method="fork")
    assert fork_count >= len(first) + len(second)  # every task's child, plus the spares kept ready
    assert 0 < fork_sum / fork_count < 5.0  # a fork, as the worker waits for it: well under seconds
    spawn_count = value(samples, "modelops_child_start_seconds_count", start_method="spawn")
    spawn_sum = value(samples, "modelops_child_start_seconds_sum", start_method="spawn")
    assert spawn_count == len(fallback)
    assert 0.01 < spawn_sum / spawn_count < 30.0  # a new interpreter: tens of milliseconds at least

    assert value(samples, "modelops_zygote_restarts_total", reason="died") == 1
    assert value(samples, "modelops_cold_spawn_fallbacks_total", reason="threaded_import") == 1
    assert value(samples, "modelops_cold_spawn_fallback_tasks_total") == len(fallback)

    peak_count = value(samples, "modelops_task_memory_peak_bytes_count", executor="cold")
    peak_sum = value(samples, "modelops_task_memory_peak_bytes_sum", executor="cold")
    assert peak_count == tasks
    assert 5 * MIB < peak_sum / peak_count < 2048 * MIB  # a Python process's resident set
