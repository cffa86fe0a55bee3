"""Metrics and dashboard of a real release: after a study, every worker process's /metrics serves
Dask's worker metrics and modelops' task metrics, the scheduler's /metrics Dask's scheduler metrics,
and the dashboard is served (bokeh in the image)."""

from __future__ import annotations

import re

import pytest

STUDY = "/opt/modelops/bundles/sir/study.json"


@pytest.fixture(scope="module")
def release(releases):
    rel = releases.new("helm4")
    rel.install(["cold.yaml", "local.yaml"])
    yield rel
    rel.uninstall()


def test_worker_and_scheduler_metrics_and_dashboard(release):
    svc, _ = release.scheduler_service()
    workers = [f"http://{p['status']['podIP']}:8788/metrics" for p in release.pods()]
    urls = [*workers, f"http://{svc}:8787/metrics", f"http://{svc}:8787/status"]
    got = release.fetch_pages(urls, before=f"mops run {STUDY} --scheduler @SCHEDULER@ >/dev/null && ")
    for url in workers:
        body = got[url]
        assert "Prometheus metrics are not available" not in body
        assert re.search(r"^dask_worker_threads \d", body, re.M), body[:2000]
        m = re.search(r'^modelops_tasks_total\{cold_start="fork",error_kind="",executor="cold",status="ok"\} (\S+)$',
                      body, re.M)
        assert m and float(m.group(1)) >= 1, body[-3000:]
        assert "modelops_task_duration_seconds_bucket" in body
    assert sum(float(m) for url in workers for m in re.findall(
        r'^modelops_tasks_total\{[^}]*status="ok"\} (\S+)$', got[url], re.M)) == 12
    assert re.search(r"^dask_scheduler_workers\{", got[f"http://{svc}:8787/metrics"], re.M)
    status = got[f"http://{svc}:8787/status"]
    assert "needs bokeh" not in status.lower() and "bokeh" in status.lower(), status[:2000]
