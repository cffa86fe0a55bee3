"""A real `dask scheduler` (with modelops' preload) serves each worker address's running tasks at
/modelops/pod-costs, and the deletion-cost sidecar reads them from there: the costs follow the tasks. The
sidecar itself, started as the image's entrypoint starts it, refuses to start without its selector or a
ServiceAccount token, saying which."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from distributed import Client

from modelops.local_cluster import LocalProcessCluster
from modelops.scheduler.pod_costs import ROUTE
from modelops.services.dask_simulation import DaskSimulationService
from modelops.settings import DELETION_COST_SELECTOR_VARIABLE
from modelops.sidecar.deletion_cost import read_costs
from modelops.study import Study

pytestmark = pytest.mark.cluster


def test_the_scheduler_serves_running_tasks_per_pod_and_the_sidecar_reads_them(bundles_dir, tmp_path):
    cluster = LocalProcessCluster(n_workers=2, nthreads=1, log_dir=tmp_path / "cluster",
                                  env={"MODELOPS_BUNDLES_DIR": str(bundles_dir)})
    with cluster, Client(cluster.address) as client:
        url = f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}{ROUTE}"
        assert read_costs(url) == {"127.0.0.1": 0}  # two worker processes of one "pod" (one address), idle
        service = DaskSimulationService(client)
        bundle = service.resolve_bundle("faulty")
        study = Study(name="costs", bundle="faulty", parameters=[{"fault": "sleep", "seconds": 4, "i": i}
                                                                 for i in range(3)])
        futures = service.submit_many(list(study.tasks(bundle["digest"], bundle["entrypoint"])))
        deadline = time.monotonic() + 60
        while read_costs(url) != {"127.0.0.1": 2}:  # two threads busy; the third task waits: not counted
            assert time.monotonic() < deadline, read_costs(url)
            time.sleep(0.2)
        assert [f.result(timeout=120)["status"] for f in futures] == ["ok"] * 3
        assert read_costs(url) == {"127.0.0.1": 0}


@pytest.mark.parametrize("selector, says", [
    ("", f"{DELETION_COST_SELECTOR_VARIABLE}='' is invalid: allowed a label selector naming the worker pods"),
    ("app=worker", "no ServiceAccount token at /var/run/secrets/kubernetes.io/serviceaccount/token"),
    ("app=(worker)", f"{DELETION_COST_SELECTOR_VARIABLE}='app=(worker)' is invalid"),
])
def test_the_sidecar_does_not_start_without_its_selector_or_token(selector, says):
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        pytest.skip("this machine mounts a ServiceAccount token: the sidecar would start")
    env = {**os.environ, DELETION_COST_SELECTOR_VARIABLE: selector, "MODELOPS_ENTRYPOINT_NO_INIT": "1"}
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "modelops-entrypoint"), "deletion-cost"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert says in proc.stderr, proc.stderr
