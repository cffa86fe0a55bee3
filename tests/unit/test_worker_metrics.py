"""modelops' Prometheus metrics on a worker: counted per task result, in the default registry that
Dask's /metrics handler serves."""

from __future__ import annotations

import prometheus_client

from modelops.tasks import Provenance, TaskError, TaskResult
from modelops.worker import metrics


def result(status: str, executor: str = "cold", cold_start: str | None = "fork", kind: str | None = None):
    return TaskResult(
        task_id="sim-x", status=status, params={}, seed=1, outputs={} if status == "ok" else None,
        error=TaskError(kind=kind, type="E", message="m") if kind else None,
        provenance=Provenance(executor=executor, cold_start=cold_start, worker="w", worker_group="g", pid=1,
                              bundle="b", bundle_digest="d", started=0.0, duration_s=0.25),
    )


def sample(name: str, **labels) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def test_tasks_are_counted_by_executor_start_method_and_outcome():
    assert metrics.enabled()
    ok = dict(executor="cold", cold_start="fork", status="ok", error_kind="")
    failed = dict(executor="cold", cold_start="fork", status="failed", error_kind="oom")
    before_ok, before_failed = sample("modelops_tasks_total", **ok), sample("modelops_tasks_total", **failed)
    before_hist = sample("modelops_task_duration_seconds_count", executor="cold")
    metrics.observe(result("ok"), "fork")
    metrics.observe(result("ok"), "fork")
    metrics.observe(result("failed", kind="oom"), "fork")
    assert sample("modelops_tasks_total", **ok) == before_ok + 2
    assert sample("modelops_tasks_total", **failed) == before_failed + 1
    assert sample("modelops_task_duration_seconds_count", executor="cold") == before_hist + 3


def test_a_fork_worker_task_served_by_spawn_counts_as_a_fallback():
    before = sample("modelops_cold_spawn_fallback_tasks_total")
    metrics.observe(result("ok", cold_start="spawn"), "fork")
    metrics.observe(result("ok", cold_start="spawn"), "spawn")  # configured spawn: not a fallback
    assert sample("modelops_cold_spawn_fallback_tasks_total") == before + 1


def test_dask_metrics_page_includes_them():
    text = prometheus_client.generate_latest().decode()
    assert "modelops_tasks_total" in text and "modelops_task_duration_seconds_bucket" in text


def test_memory_peak_and_process_events_are_recorded():
    before_peak = sample("modelops_task_memory_peak_bytes_count", executor="cold")
    metrics.observe(result("ok"), "fork", memory_peak_bytes=40 * 2**20)
    metrics.observe(result("ok"), "fork")  # no child (e.g. direct): nothing to record
    assert sample("modelops_task_memory_peak_bytes_count", executor="cold") == before_peak + 1
    events = metrics.executor_events()
    before = (
        sample("modelops_child_start_seconds_count", start_method="fork"),
        sample("modelops_zygote_restarts_total", reason="threaded"),
        sample("modelops_cold_spawn_fallbacks_total", reason="import_rng"),
    )
    events.child_started("fork", 0.004)
    events.zygote_replaced("threaded")
    events.spawn_fallback("import_rng")
    assert sample("modelops_child_start_seconds_count", start_method="fork") == before[0] + 1
    assert sample("modelops_zygote_restarts_total", reason="threaded") == before[1] + 1
    assert sample("modelops_cold_spawn_fallbacks_total", reason="import_rng") == before[2] + 1


def test_a_bundle_environment_build_is_observed_once_by_the_task_that_paid_for_it():
    def with_env(built: bool):
        r = result("ok")
        r.provenance.environment = {"lock_digest": "sha256:x", "key": "k", "built": built, "build_seconds": 0.4,
                                    "installed_from": "wheels"}
        return r

    before = sample("modelops_bundle_environment_build_seconds_count", installed_from="wheels")
    metrics.observe(with_env(True), "fork")
    metrics.observe(with_env(False), "fork")  # reused: no build
    metrics.observe(result("ok"), "fork")  # the worker's own environment
    assert sample("modelops_bundle_environment_build_seconds_count", installed_from="wheels") == before + 1
