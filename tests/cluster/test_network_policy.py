"""The chart's NetworkPolicies, enforced for real: the cluster tier runs kube-network-policies
(cluster/manifests/network-policies.yaml), so a connection a policy does not admit is dropped.

Each claim is tried as the connection it stops, from real pods (probe pods labelled as a client, as a
scraper, or not at all, and the workers themselves), and then tried again with the release's policies
deleted, where the same connection must succeed: a test that passed because nothing answered would
fail there. The namespaces also enforce the `restricted` Pod Security Standard (conftest.py); the last
test shows that admission refuses what the standard forbids.
"""

from __future__ import annotations

import json

import pytest
import yaml
from cluster_support import CLIENT_LABELS, CommandFailed, restricted_pod

N_WORKERS = 2
SCRAPER_LABELS = {"modelops-dask-e2e/scraper": "true"}
WORKER_HTTP_PORT = 8788   # the worker process's own /metrics and /health (values: healthPort)
# Connects to every NAME=HOST:PORT argument at once; prints {NAME: "open" | "blocked: <why>"}. A policy
# drops the first packet, so a blocked connection times out: TIMEOUT bounds each probe, and a connection
# that is admitted has time for a retransmitted SYN if the enforcer saw the pod's address late.
TIMEOUT = 6
PROBE = f"""python3 -c '
import json, socket, sys, threading
out = {{}}
def probe(name, host, port):
    try:
        socket.create_connection((host, int(port)), timeout={TIMEOUT}).close()
        out[name] = "open"
    except OSError as exc:
        out[name] = "blocked: %s" % (exc,)
threads = [threading.Thread(target=probe, args=(a.split("=")[0], *a.split("=")[1].rsplit(":", 1))) for a in sys.argv[1:]]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out, sort_keys=True))
'"""


@pytest.fixture(scope="module")
def guarded(target, releases, tmp_path_factory):
    """A release with every policy on (restricted worker egress, a scraper admitted by metricsFrom), and
    three probe pods beside it: a labelled client, a scraper and a stranger."""
    if not target.registry_bridge:
        pytest.skip("the cluster's env file names no REGISTRY_BRIDGE for the workers' registry egress")
    enforcer = target.kubectl_json("--namespace", "kube-system", "get", "pods", "-l", "k8s-app=kube-network-policies")
    if not enforcer["items"]:
        pytest.skip("this cluster runs no NetworkPolicy enforcer (kube-network-policies): policies would not block")
    rel = releases.new()
    host, port = target.registry_bridge.rsplit(":", 1)
    values = tmp_path_factory.mktemp("values") / "policy.yaml"
    values.write_text(yaml.safe_dump({
        "worker": {"replicas": N_WORKERS, "bundles": {"source": "oci", "oci": {
            "plainHttp": "true",
            "registryEgress": [{"to": [{"ipBlock": {"cidr": f"{host}/32"}}],
                                "ports": [{"port": int(port), "protocol": "TCP"}]}]}}},
        "networkPolicy": {"enabled": True, "restrictWorkerEgress": True,
                          "metricsFrom": [{"podSelector": {"matchLabels": SCRAPER_LABELS}}]},
    }))
    rel.install(["cold.yaml", "local.yaml", str(values)])
    for name, labels in (("client", CLIENT_LABELS), ("scraper", SCRAPER_LABELS), ("stranger", {})):
        rel.kubectl("apply", "-f", "-", stdin=json.dumps(restricted_pod(name, target.image, "exec sleep 3600",
                                                                         labels=labels)))
    rel.kubectl("wait", "--for=condition=Ready", "pod/client", "pod/scraper", "pod/stranger", "--timeout=180s",
                timeout=200)
    return rel


def probe(rel, pod: str, targets: dict[str, str], container: str | None = None) -> dict[str, str]:
    """NAME -> "open" or "blocked: ..." for connections from POD to each HOST:PORT, tried at once."""
    args = " ".join(f"{name}={addr}" for name, addr in targets.items())
    where = ["-c", container] if container else []
    out = rel.kubectl("exec", pod, *where, "--", "sh", "-c", f"{PROBE} {args}", timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def addresses(rel, target) -> dict[str, str]:
    svc, comm = rel.scheduler_service()
    workers = sorted(rel.pods(), key=lambda p: p["metadata"]["name"])
    assert len(workers) == N_WORKERS
    coredns = target.kubectl_json("--namespace", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"][0]
    node = target.registry_bridge.rsplit(":", 1)[0]
    return {
        "scheduler": f"{svc}:{comm}", "dashboard": f"{svc}:8787",
        "worker0": workers[0]["metadata"]["name"], "worker1": workers[1]["metadata"]["name"],
        "worker1_http": f"{workers[1]['status']['podIP']}:{WORKER_HTTP_PORT}",
        "registry": target.registry_bridge,
        # In-cluster addresses no policy of the release admits for its workers: CoreDNS's health port
        # (only port 53 is), the object store and the API server on the node's address.
        "coredns_health": f"{coredns['status']['podIP']}:8080",
        "object_store": f"{node}:7070", "api_server": f"{node}:6443",
    }


def opened(result: dict[str, str], *names: str) -> list[str]:
    """Those of `names` whose connection opened (each one a test expects to be blocked)."""
    return [n for n in names if result[n] == "open"]


def test_only_labelled_clients_scrapers_and_the_release_reach_the_scheduler_and_workers(guarded, target):
    """A pod without the client label cannot open the scheduler's port nor a worker's; a labelled client
    can; a pod matching metricsFrom reaches the dashboard and the workers' metrics port but not the
    scheduler's comm port. With the policies deleted, the stranger's connections succeed."""
    a = addresses(guarded, target)
    wanted = {"scheduler": a["scheduler"], "dashboard": a["dashboard"], "worker_http": a["worker1_http"]}
    client = probe(guarded, "client", wanted)
    scraper = probe(guarded, "scraper", wanted)
    stranger = probe(guarded, "stranger", wanted)
    assert client == {"scheduler": "open", "dashboard": "open", "worker_http": "open"}, client
    assert scraper["dashboard"] == "open" and scraper["worker_http"] == "open", scraper
    assert scraper["scheduler"].startswith("blocked"), scraper
    assert not opened(stranger, "scheduler", "dashboard", "worker_http"), stranger

    with policies_deleted(guarded):
        stranger = probe(guarded, "stranger", wanted)
        assert stranger == {"scheduler": "open", "dashboard": "open", "worker_http": "open"}, (
            f"without the policies the stranger's connections must succeed (else the test proves nothing): {stranger}")


def test_restricted_worker_egress_reaches_the_scheduler_peers_dns_and_registry_and_nothing_else(guarded, target):
    """restrictWorkerEgress: a worker reaches the scheduler (by name, so through cluster DNS), a peer
    worker and the bundle registry; CoreDNS's other port, the object store and the API server are
    refused. With the policies deleted those succeed."""
    a = addresses(guarded, target)
    wanted = {k: a[k] for k in ("scheduler", "worker1_http", "registry", "coredns_health", "object_store", "api_server")}
    got = probe(guarded, a["worker0"], wanted, container="worker")
    assert {k: got[k] for k in ("scheduler", "worker1_http", "registry")} == {
        "scheduler": "open", "worker1_http": "open", "registry": "open"}, got
    assert not opened(got, "coredns_health", "object_store", "api_server"), got

    with policies_deleted(guarded):
        got = probe(guarded, a["worker0"], wanted, container="worker")
        assert got == dict.fromkeys(wanted, "open"), (
            f"without the policies every probe must connect (else the test proves nothing): {got}")


def test_the_release_works_under_enforced_policies(guarded):
    """`helm test` (a study of probe tasks through the scheduler, every worker connected) passes with
    the policies in force: they admit everything the release needs."""
    guarded.helm_test()


def test_the_namespace_refuses_a_pod_the_restricted_standard_forbids(guarded, target):
    """The suite's namespaces enforce the `restricted` Pod Security Standard: a privileged pod is
    refused there, naming the standard, while the same pod passes admission in a namespace without it."""
    pod = restricted_pod("privileged", target.image, "exec sleep 60")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(CommandFailed) as refused:
        guarded.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert 'violates PodSecurity "restricted:latest"' in str(refused.value) and "privileged" in str(refused.value)
    admitted = target.kubectl("--namespace", "default", "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert "created (server dry run)" in admitted


class policies_deleted:
    """Deletes the release's NetworkPolicies for the block, then creates them again as they were, so
    later tests see the release as installed."""

    def __init__(self, rel):
        self.rel = rel

    def __enter__(self):
        self.saved = self.rel.kubectl("get", "networkpolicy", "-o", "json")
        self.rel.kubectl("delete", "networkpolicy", "--all")
        assert not self.rel.items("networkpolicy")

    def __exit__(self, *exc):
        items = json.loads(self.saved)["items"]
        for item in items:
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
                item["metadata"].pop(key, None)
        self.rel.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        assert len(self.rel.items("networkpolicy")) == len(items)
