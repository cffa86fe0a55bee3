"""Worker pods pulling an OCI bundle from a registry: a model pushed with `mops bundle push` to the
registry as pods reach it (REGISTRY_BRIDGE in .cluster/env: the local cluster's registry on the pod
bridge), the chart installed with `worker.bundles.source: oci`, a pull secret, a bounded cache and
the workers' egress restricted to the release, DNS and that registry; cold studies naming the bundle
by tag, from this machine through a port-forward and from an in-cluster client Job.

- `mops run` pins the tag to the manifest digest at submit: every task's provenance names
  `HOST/REPO@sha256:<that digest>` and the content digest of the pushed files;
- each worker pod pulls the digest once (its log says `Pulled bundle <pinned ref>` once, however
  many tasks and studies it ran), later studies run from the pods' caches;
- the rendered NetworkPolicy admits the workers' egress to the registry (the local cluster's bridge
  CNI does not enforce NetworkPolicies: there this proves the rule, and that pulls work with it).

Timings (helm install to first result, a pull inside a pod) are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from cluster_support import MOPS, REPO, load_results, run

from modelops.bundles.digest import content_digest
from tests.helpers import skip_or_fail

SIR = REPO / "examples" / "sir"
PARAMETERS = json.loads((SIR / "study.json").read_text())["parameters"]
REPLICATES = 3
N_TASKS = len(PARAMETERS) * REPLICATES
CACHE_DIR = "/var/cache/modelops/bundles"  # the chart's default worker.bundles.oci.cache.dir


def mops(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([str(MOPS), *args], timeout=timeout, check=False,
               env={**os.environ, "MODELOPS_REGISTRY_PLAIN_HTTP": "true"})


def study(bundle: str, name: str) -> dict:
    return {"name": name, "bundle": bundle, "parameters": PARAMETERS, "replicates": REPLICATES, "base_seed": 7}


@pytest.fixture(scope="module")
def bundle(target, tmp_path_factory) -> dict:
    """The sir example, with a unique marker file (fresh blobs in the shared registry), pushed by tag
    to the registry's pod-side address."""
    if not target.registry_bridge:
        skip_or_fail("the cluster's env file names no REGISTRY_BRIDGE (the registry as pods reach it; "
                     "cluster/publish.sh writes it)", required_by="MODELOPS_CLUSTER_REQUIRED")
    directory = tmp_path_factory.mktemp("bundle") / "sir"
    shutil.copytree(SIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "marker.txt").write_text(f"cluster test {uuid.uuid4().hex}\n")
    repo = f"{target.registry_bridge}/modelops-test/cluster-{uuid.uuid4().hex[:12]}"
    pushed = mops("bundle", "push", str(directory), f"{repo}:1.0", "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71, pushed.stdout
    inspected = mops("bundle", "inspect", f"{repo}:1.0", "--plain-http", "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["digest"] == digest and info["content_digest"] == content_digest(directory)
    # one registry, two addresses: what was pushed for the pods is what this machine's address serves
    local = mops("bundle", "inspect", f"{repo.replace(target.registry_bridge, target.registry, 1)}:1.0", "--json")
    assert local.returncode == 0 and json.loads(local.stdout)["digest"] == digest, local.stderr
    return {"dir": directory, "tag_ref": f"{repo}:1.0", "digest": digest, "pinned": f"{repo}@{digest}",
            "content_digest": info["content_digest"]}


@pytest.fixture(scope="module")
def oci(releases, target, bundle, tmp_path_factory):
    """A cold release of two worker pods on source oci, and the first study through a port-forward,
    timed from the start of `helm install` to its first result line."""
    rel = releases.new()
    host, port = target.registry_bridge.rsplit(":", 1)
    # A pull secret as a team would create it; this registry needs none, so it proves the mounted
    # docker config is read without breaking anonymous pulls.
    rel.kubectl("create", "secret", "docker-registry", "regcred", f"--docker-server={target.registry_bridge}",
                "--docker-username=team", "--docker-password=not-checked-here")
    values = tmp_path_factory.mktemp("values") / "oci.yaml"
    values.write_text(yaml.safe_dump({
        "worker": {
            "replicas": 2,
            "bundles": {"source": "oci", "oci": {
                "plainHttp": "true",
                "pullSecret": "regcred",
                "cache": {"maxMb": 64, "sizeLimit": "256Mi"},
                "registryEgress": [{"to": [{"ipBlock": {"cidr": f"{host}/32"}}],
                                    "ports": [{"port": int(port), "protocol": "TCP"}]}],
            }},
        },
        "networkPolicy": {"enabled": True, "restrictWorkerEgress": True},
    }))
    t0 = time.monotonic()
    rel.install(["cold.yaml", "local.yaml", str(values)])
    installed = time.monotonic() - t0

    path, output = tmp_path_factory.mktemp("study") / "study.json", tmp_path_factory.mktemp("out") / "results.jsonl"
    path.write_text(json.dumps(study(bundle["tag_ref"], "oci-port-forward")))
    with rel.port_forward() as address:
        proc = subprocess.Popen([str(MOPS), "run", str(path), "--scheduler", address, "--output", str(output)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "MODELOPS_REGISTRY_PLAIN_HTTP": "true"})
        first = None
        try:
            deadline = time.monotonic() + 600
            while proc.poll() is None:
                if first is None and output.exists() and output.read_text().strip():
                    first = time.monotonic() - t0
                assert time.monotonic() < deadline, "the study did not finish within 600 s"
                time.sleep(0.1)
            out = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"mops run failed:\n{out[-3000:]}"
    total = time.monotonic() - t0
    first = first or total
    print(f"\nOCI release: helm install --wait {installed:.1f} s; first result {first:.1f} s "
          f"({first - installed:.1f} s after the pods were ready: port-forward, tag pinned, bundle pulled, "
          f"zygote, task), last of {N_TASKS} tasks {total:.1f} s after the install started")
    return {"release": rel, "results": load_results(output.read_text()), "output": out}


def worker_ip(result: dict) -> str:
    return result["provenance"]["worker"].removeprefix("tcp://").rsplit(":", 1)[0]


def check_study(results: list[dict], bundle: dict) -> None:
    assert len(results) == N_TASKS, len(results)
    assert {r["status"] for r in results} == {"ok"}, [r["error"] for r in results if r["status"] != "ok"][:2]
    # the tag, pinned once at submit: every task names the manifest digest the push printed ...
    assert {r["provenance"]["bundle"] for r in results} == {bundle["pinned"]}
    # ... and ran exactly the pushed files
    assert {r["provenance"]["bundle_digest"] for r in results} == {bundle["content_digest"]}
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    pairs = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pairs)) == len(pairs), Counter(pairs).most_common(2)  # cold: a fresh process per task


def test_a_study_by_tag_runs_every_task_on_the_pinned_digest(oci, bundle):
    check_study(oci["results"], bundle)
    assert f"bundle sir {bundle['content_digest'][:19]}" in oci["output"], oci["output"][-2000:]


def test_each_worker_pod_pulls_the_digest_once_and_later_studies_run_from_its_cache(oci, bundle):
    rel = oci["release"]
    # A second study by the same tag, from a client inside the namespace (it pins the tag through the
    # registry's pod-side address too).
    spec = json.dumps(study(bundle["tag_ref"], "oci-in-cluster"))
    out = rel.run_client_job(f"printf '%s' '{spec}' > /tmp/study.json && MODELOPS_REGISTRY_PLAIN_HTTP=true "
                             "mops run /tmp/study.json --scheduler @SCHEDULER@ --output /tmp/results.jsonl"
                             " && cat /tmp/results.jsonl")
    second = load_results(out)
    check_study(second, bundle)

    logs = rel.worker_logs_by_ip()
    assert len(logs) == 2
    pulls = {pod: log.count(f"Pulled bundle {bundle['pinned']} (sir 1.0.0)") for pod, log in logs.values()}
    ran = {logs[worker_ip(r)][0] for r in oci["results"] + second}
    assert all(pulls[pod] == 1 for pod in ran), pulls  # once per pod, over two studies of 12 tasks
    assert all(n <= 1 for n in pulls.values()), pulls
    for pod, log in logs.values():
        assert "Bundle source: oci" in log and "Executor: cold" in log, log[-2000:]
        assert "Pulled bundle" not in log.replace(f"Pulled bundle {bundle['pinned']}", ""), log[-2000:]


def test_a_pull_inside_a_worker_pod_through_the_bridge_registry(oci, bundle):
    """A fresh cache in the pod's /tmp: the real pull (resolve, fetch, verify, unpack), then a cached use."""
    rel = oci["release"]
    pod = rel.pods()[0]["metadata"]["name"]
    script = f"""
import json, shutil, tempfile, time
from pathlib import Path
from modelops.bundles.oci import RegistryClient
from modelops.bundles.oci_source import OciBundleCache
root = tempfile.mkdtemp(dir="/tmp")
cache = OciBundleCache(Path(root), 64 << 20, RegistryClient(plain_http=True))
t = time.perf_counter(); first = cache.get({bundle['pinned']!r}); pull = time.perf_counter() - t
t = time.perf_counter(); again = cache.get({bundle['pinned']!r}); cached = time.perf_counter() - t
print(json.dumps({{"pulled": first.pulled, "again_pulled": again.pulled, "digest": first.bundle.digest,
                  "pull": pull, "cached": cached}}))
shutil.rmtree(root)
"""
    report = json.loads(rel.kubectl("exec", pod, "-c", "worker", "--", "python", "-c", script).strip().splitlines()[-1])
    assert report["pulled"] and not report["again_pulled"], report
    assert report["digest"] == bundle["content_digest"]
    print(f"\npull inside pod {pod}: {report['pull'] * 1000:.0f} ms (resolve, fetch, verify, unpack); "
          f"cached use {report['cached'] * 1000:.1f} ms")
    # the workers' own cache, on the chart's bounded emptyDir, holds the study's bundle
    listing = rel.kubectl("exec", pod, "-c", "worker", "--", "ls", f"{CACHE_DIR}/bundles")
    assert bundle["digest"].split(":", 1)[1] in listing.split(), listing


def test_the_pull_secret_is_the_workers_docker_config(oci, target):
    rel = oci["release"]
    pod = rel.pods()[0]["metadata"]["name"]
    out = rel.kubectl("exec", pod, "-c", "worker", "--", "sh", "-c", 'cat "$DOCKER_CONFIG/config.json"')
    assert target.registry_bridge in json.loads(out)["auths"], out


def test_the_workers_egress_policy_admits_the_registry(oci, target):
    rel = oci["release"]
    policies = {p["metadata"]["name"]: p for p in rel.items("networkpolicies")}
    worker = next(p for name, p in policies.items() if name.endswith("-worker"))
    assert "Egress" in worker["spec"]["policyTypes"]
    host, port = target.registry_bridge.rsplit(":", 1)
    assert {"to": [{"ipBlock": {"cidr": f"{host}/32"}}], "ports": [{"port": int(port), "protocol": "TCP"}]} \
        in worker["spec"]["egress"], worker["spec"]["egress"]
    # nothing else outside the release but DNS
    others = [rule for rule in worker["spec"]["egress"] if "to" in rule and not any("podSelector" in t for t in rule["to"])]
    assert len(others) == 1, others
