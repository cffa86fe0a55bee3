"""A real `dask scheduler` told to keep the pods' deletion cost (MODELOPS_POD_DELETION_COST_SELECTOR) where no
Kubernetes API is at hand (no ServiceAccount token, as outside a pod or with the token not mounted): it says
so once, clearly, and serves studies as usual."""

from __future__ import annotations

import time

import pytest
from distributed import Client

from modelops.local_cluster import LocalProcessCluster
from modelops.services.dask_simulation import DaskSimulationService
from modelops.settings import DELETION_COST_SELECTOR_VARIABLE
from modelops.study import Study

pytestmark = pytest.mark.cluster


def test_without_an_api_the_scheduler_logs_once_and_serves(bundles_dir, tmp_path):
    cluster = LocalProcessCluster(n_workers=1, nthreads=2, log_dir=tmp_path / "cluster",
                                  env={"MODELOPS_BUNDLES_DIR": str(bundles_dir)},
                                  scheduler_env={DELETION_COST_SELECTOR_VARIABLE: "app.kubernetes.io/component=worker"})
    with cluster, Client(cluster.address) as client:
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("sir")
        study = Study(name="no-api", bundle="sir", parameters=[{"beta": 0.3, "gamma": 0.1, "days": 50}], replicates=4)
        futures = service.submit_many(list(study.tasks(bundle["digest"], bundle["entrypoint"])))
        assert [f.result(timeout=120)["status"] for f in futures] == ["ok"] * 4
        time.sleep(1)
        log = (tmp_path / "cluster" / "scheduler.log").read_text()
    lines = [line for line in log.splitlines() if "Pod deletion cost" in line]
    assert len(lines) == 1, lines
    assert "off, the Kubernetes API is not usable (no ServiceAccount token at" in lines[0], lines[0]
