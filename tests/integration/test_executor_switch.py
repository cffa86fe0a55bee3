"""Replacing cold workers with warm ones mid-study, as a `helm upgrade` rolling the pods would."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from distributed import Client

from modelops.services.dask_simulation import DaskSimulationService
from modelops.study import Study

pytestmark = pytest.mark.cluster


def test_switching_executor_mid_study_completes_with_true_provenance(cluster_factory):
    cluster = cluster_factory(n_workers=1, nthreads=2, MODELOPS_EXECUTOR_TYPE="cold", MODELOPS_COLD_START="spawn")
    old = cluster.workers[0]
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("native_counter")
        study = Study(name="switch", bundle="native_counter", parameters=[{"i": i} for i in range(120)])
        seen = []

        def roll(result):
            seen.append(result)
            if len(seen) == 30:  # new pods come up with the new env, then the old ones get SIGTERM
                cluster.start_worker(env={"MODELOPS_EXECUTOR_TYPE": "isolated_warm"}, name="new-worker")
                cluster.wait_for_workers(2)
                old.send_signal(signal.SIGTERM)

        results = service.run(study.tasks(bundle["digest"], bundle["entrypoint"]), on_result=roll)
        runtimes = service.worker_runtime()
    old.wait(timeout=30)
    assert len(results) == 120 and len({r.task_id for r in results}) == 120
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    by_executor = Counter(r.provenance.executor for r in results)
    assert by_executor["cold"] >= 30 and by_executor["isolated_warm"] > 0
    for r in results:
        # what provenance says is what really ran: cold never leaks native state, warm does
        if r.provenance.executor == "cold":
            assert r.outputs["native_calls"] == 1
    warm_calls = sorted(r.outputs["native_calls"] for r in results if r.provenance.executor == "isolated_warm")
    assert warm_calls[-1] > 1
    assert [i["executor"] for i in runtimes.values()] == ["isolated_warm"]
