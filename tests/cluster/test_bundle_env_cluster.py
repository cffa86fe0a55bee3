"""Bundles with their own Python environments on worker pods: two bundles whose requirements.txt pin
two versions of `six` are pushed with `mops bundle push --with-wheels` (real wheels from this machine's
package index) to the registry as pods reach it, and run by one cold worker pod at the same time. The
pod cannot reach a package index: it builds each lock's environment offline, from the artifact's wheels,
on its bundle-cache volume under a read-only root filesystem. Build and first-result times are printed."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import yaml
from cluster_support import MOPS, load_results, run

from tests.helpers import SIX_VERSIONS as VERSIONS
from tests.helpers import make_six_bundle, six_study, skip_or_fail

TASKS_PER_STUDY = 2  # x 2 studies = the pod's 4 threads, all busy at once (in the pod's /tmp: one rendezvous)

def mops(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([str(MOPS), *args], timeout=timeout, check=False,
               env={**os.environ, "MODELOPS_REGISTRY_PLAIN_HTTP": "true"})


@pytest.fixture(scope="module")
def refs(target, tmp_path_factory) -> dict[str, str]:
    if not target.registry_bridge:
        skip_or_fail("the cluster's env file names no REGISTRY_BRIDGE (the registry as pods reach it; "
                     "cluster/publish.sh writes it)", required_by="MODELOPS_CLUSTER_REQUIRED")
    root = tmp_path_factory.mktemp("env-bundles")
    out = {}
    for version in VERSIONS:
        bundle = make_six_bundle(root, version)
        repo = f"{target.registry_bridge}/modelops-test/env-{uuid.uuid4().hex[:12]}"
        pushed = mops("bundle", "push", str(bundle), f"{repo}:1", "--plain-http", "--with-wheels")
        if pushed.returncode != 0 and "could not download" in pushed.stderr:
            skip_or_fail(f"pip could not fetch six=={version} from this machine's package index: {pushed.stderr}",
                         required_by="MODELOPS_CLUSTER_REQUIRED")
        assert pushed.returncode == 0, pushed.stderr
        out[version] = f"{repo}:1"
    return out


def test_two_bundles_with_two_versions_of_six_run_at_once_in_one_pod(releases, refs, tmp_path):
    rel = releases.new()
    values = tmp_path / "env.yaml"
    values.write_text(yaml.safe_dump({"worker": {
        "replicas": 1, "nthreads": 2 * TASKS_PER_STUDY,
        "bundles": {"source": "oci", "oci": {"plainHttp": "true"}},  # packageIndexUrl "": wheels only
    }}))
    rel.install(["cold.yaml", "local.yaml", str(values)])
    rendezvous = f"/tmp/rendezvous-{uuid.uuid4().hex[:8]}"
    runs = {}
    t0 = time.monotonic()
    with rel.port_forward() as address:
        for version, ref in refs.items():
            study = six_study(tmp_path / f"study-{version}.json", ref, version, TASKS_PER_STUDY, rendezvous)
            output = tmp_path / f"results-{version}.jsonl"
            runs[version] = (output, subprocess.Popen(
                [str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "MODELOPS_REGISTRY_PLAIN_HTTP": "true"}))
        results = {}
        for version, (output, proc) in runs.items():
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"mops run ({version}) failed:\n{out[-3000:]}"
            results[version] = load_results(output.read_text())
    elapsed = time.monotonic() - t0
    builds = []
    for version, lines in results.items():
        assert len(lines) == TASKS_PER_STUDY and {r["status"] for r in lines} == {"ok"}, lines
        assert {r["outputs"]["six"] for r in lines} == {version}
        prefixes = {r["outputs"]["prefix"] for r in lines}
        assert len(prefixes) == 1 and prefixes.pop().startswith("/var/cache/modelops/bundles/environments/")
        envs = [r["provenance"]["environment"] for r in lines]
        assert {e["installed_from"] for e in envs} == {"wheels"}
        assert [e["built"] for e in envs].count(True) == 1
        builds.append(envs[0]["build_seconds"])
    assert len({r["provenance"]["worker"] for lines in results.values() for r in lines}) == 1
    assert results[VERSIONS[0]][0]["outputs"]["prefix"] != results[VERSIONS[1]][0]["outputs"]["prefix"]
    print(f"\nbundle environments in a pod: built in {', '.join(f'{b:.2f}' for b in builds)} s; both studies "
          f"done {elapsed:.1f} s after submission (pull, build, zygote, tasks)")
