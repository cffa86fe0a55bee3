"""Replicas have one owner (issue 22, item 6): after `kubectl scale` of a worker Deployment, `helm upgrade`
keeps working when the group's replicas belong to the cluster (`replicasOwner: cluster`), under Helm 4's
server-side apply and Helm 3's client-side merge, and the count stays the one `kubectl scale` set. With the
values as owner (the default), Helm 4 refuses the upgrade on `.spec.replicas` (the reproduction), and
`--force-conflicts` is the documented way back to the values' count."""

from __future__ import annotations

import json

import pytest

DEPLOYMENT = "{name}-modelops-dask-worker"
VALUES = ["warm.yaml", "local.yaml"]


def deployment(rel) -> dict:
    return json.loads(rel.kubectl("get", "deployment", DEPLOYMENT.format(name=rel.name), "-o", "json",
                                  "--show-managed-fields"))


def replicas_managers(rel) -> list[str]:
    """The field managers owning the worker Deployment's .spec.replicas."""
    return [m["manager"] for m in deployment(rel)["metadata"]["managedFields"]
            if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})]


def scale(rel, n: int) -> None:
    rel.kubectl("scale", "deployment", DEPLOYMENT.format(name=rel.name), f"--replicas={n}")


def last_status(rel) -> str:
    return rel.history()[-1]["status"]


def test_helm4_values_owner_conflicts_then_cluster_owner_keeps_the_scaled_count(releases):
    rel = releases.new("helm4")
    rel.install(VALUES, sets=["worker.replicas=1"])
    scale(rel, 2)
    # the reproduction: the values own the replicas and Helm 4 will not override kubectl's count
    proc = rel.upgrade(VALUES, sets=["worker.replicas=1"], check=False)
    assert proc.returncode != 0 and "conflict" in proc.stderr and ".spec.replicas" in proc.stderr, proc.stderr
    assert last_status(rel) == "failed"

    # the group's replicas given to the cluster: the upgrade goes through, the count is kubectl's
    rel.upgrade(VALUES, sets=["worker.replicas=1", "worker.replicasOwner=cluster"])
    assert last_status(rel) == "deployed"
    assert deployment(rel)["spec"]["replicas"] == 2
    assert replicas_managers(rel) == ["kubectl"], "Helm should have let go of .spec.replicas"

    # and stays so through further scaling and upgrades
    scale(rel, 3)
    rel.upgrade(VALUES, sets=["worker.replicas=1", "worker.replicasOwner=cluster"])
    assert last_status(rel) == "deployed"
    assert deployment(rel)["spec"]["replicas"] == 3
    assert len(rel.pods()) == 3

    # back to the values: --force-conflicts once, and the values' count wins
    rel.helm("upgrade", rel.name, *rel.chart_args(VALUES, ["worker.replicas=1"]), "--force-conflicts", "--wait",
             "--timeout", "5m")
    assert last_status(rel) == "deployed"
    assert deployment(rel)["spec"]["replicas"] == 1
    assert replicas_managers(rel) == ["helm"]


def test_helm4_cluster_owner_from_install_keeps_the_live_count_helm_alone_owned(releases):
    """Turning a group cluster-owned while Helm alone owns its count keeps the live count (dropping the
    field would reset it to 1), and a later kubectl scale never conflicts."""
    rel = releases.new("helm4")
    rel.install(VALUES, sets=["worker.replicas=2"])
    rel.upgrade(VALUES, sets=["worker.replicas=1", "worker.replicasOwner=cluster"])
    assert deployment(rel)["spec"]["replicas"] == 2, "the live count must be kept, not the values' 1"
    scale(rel, 1)
    rel.upgrade(VALUES, sets=["worker.replicas=2", "worker.replicasOwner=cluster"])
    assert last_status(rel) == "deployed"
    assert deployment(rel)["spec"]["replicas"] == 1
    assert "helm" not in replicas_managers(rel)


@pytest.mark.parametrize("helm", ["helm3"])
def test_helm3_cluster_owner_keeps_the_scaled_count(releases, helm):
    """Helm 3's three-way merge would reset a dropped replicas field: the chart renders the live count."""
    rel = releases.new(helm)
    rel.install(VALUES, sets=["worker.replicas=1", "worker.replicasOwner=cluster"])
    scale(rel, 2)
    rel.upgrade(VALUES, sets=["worker.replicas=1", "worker.replicasOwner=cluster"])
    assert last_status(rel) == "deployed"
    assert deployment(rel)["spec"]["replicas"] == 2
