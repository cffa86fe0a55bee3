"""nworkers > 1 on a real cluster: the image's modelops.worker.process_ports (preloaded by module name,
no code mounted from the chart) gives each worker process of a pod its own declared container port
(healthPort + i) for /health and /metrics, the exec probe `python -m modelops.worker.process_ports`
that checks every port makes the pod Ready, and scraping both ports of one real pod reaches two
distinct worker processes."""

from __future__ import annotations

import re

import pytest

MODULE = "modelops.worker.process_ports"


@pytest.fixture(scope="module")
def release(releases):
    rel = releases.new("helm4")
    rel.install(["local.yaml"], sets=["worker.nworkers=2", "worker.livenessProbe.enabled=true"])
    yield rel
    rel.uninstall()


def test_both_processes_of_a_pod_serve_their_own_port(release):
    [pod] = release.pods()
    container = pod["spec"]["containers"][0]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8788), ("http-1", 8789)]
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", MODULE] and command[-2:] == ["8788", "8789"], command
    args = container["args"]
    assert args[args.index("--preload-nanny") + 1] == MODULE and args[args.index("--preload") + 1] == MODULE, args
    assert not [v for v in pod["spec"]["volumes"] if "configMap" in v and "process-ports" in v["configMap"]["name"]]
    assert not [c for c in release.items("configmaps") if c["metadata"]["name"].endswith("process-ports")]
    assert all(c["ready"] for c in pod["status"]["containerStatuses"]), pod["status"]

    ip = pod["status"]["podIP"]
    urls = [f"http://{ip}:{port}/metrics" for port in (8788, 8789)]
    got = release.fetch_pages(urls)
    names = {}
    for url, port in zip(urls, (8788, 8789)):
        body = got[url]
        assert re.search(r"^dask_worker_threads \d", body, re.M), body[:2000]
        m = re.search(r"^modelops_worker_process_info\{(.*)\} 1\.0$", body, re.M)
        assert m, body[-3000:]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        assert labels["http_port"] == str(port)
        names[port] = labels["worker"]
    pod_name = pod["metadata"]["name"]
    assert sorted(names.values()) == [f"{pod_name}-0", f"{pod_name}-1"], names
    assert "already in use" not in release.logs(pod_name)
