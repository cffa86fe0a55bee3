"""Bundles with their own Python environments, end to end on a local cluster: pushed with
`mops bundle push --with-wheels` (real wheels of `six` from this machine's package index) to the
cluster's real registry, pulled by real `dask worker --preload` processes (MODELOPS_BUNDLE_SOURCE=oci),
which build each lock's environment offline from the artifact's wheels. Two studies that need two
versions of `six` run on one worker at the same time, under warm, cold fork and cold spawn."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from registry_support import mops_bundle, pushed, registry_address, unavailable

from tests.helpers import EXECUTOR_ENVS, clean_env, make_six_bundle, six_study
from tests.helpers import SIX_VERSIONS as VERSIONS

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]

@pytest.fixture(scope="module")
def pushed_refs(tmp_path_factory) -> dict[str, str]:
    """One bundle per version of six, pushed once with its wheels; version -> digest-pinned reference."""
    registry = registry_address()
    root = tmp_path_factory.mktemp("six-bundles")
    refs = {}
    for version in VERSIONS:
        bundle = make_six_bundle(root, version)
        repo = f"{registry}/modelops-test/six-probe-{uuid.uuid4().hex[:10]}"
        result = mops_bundle("push", str(bundle), f"{repo}:v1", "--with-wheels")
        if result.returncode != 0 and "could not download" in result.stderr:
            unavailable(f"pip could not fetch six=={version} from this machine's package index: {result.stderr}")
        refs[version] = f"{repo}@{pushed(result)}"
        shown = json.loads(mops_bundle("inspect", refs[version], "--json").stdout)
        assert shown["environment"]["packages"] == [f"six=={version}"]
        assert shown["environment"]["wheels"] == [f"six-{version}-py2.py3-none-any.whl"]
    return refs


@pytest.mark.parametrize("executor", ["isolated_warm", "cold-fork", "cold-spawn"])
def test_two_bundles_needing_two_versions_of_six_run_at_once_on_one_worker(pushed_refs, cluster_factory, tmp_path,
                                                                           executor):
    cluster = cluster_factory(n_workers=1, nthreads=4, MODELOPS_BUNDLE_SOURCE="oci",
                              MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"), **EXECUTOR_ENVS[executor])
    n = 2  # per study: the 4 threads hold both studies' tasks at once
    runs = {}
    for version, ref in pushed_refs.items():
        output = tmp_path / f"results-{version}.jsonl"
        runs[version] = (output, subprocess.Popen(
            [sys.executable, "-m", "modelops.cli.main", "run", str(six_study(tmp_path / f"study-{version}.json", ref, version, n, str(tmp_path / "rendezvous"))),
             "--scheduler", cluster.address, "--output", str(output)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=clean_env(),
        ))
    results = {}
    for version, (output, run) in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out + err
        results[version] = [json.loads(line) for line in output.read_text().splitlines()]
    for version, lines in results.items():
        assert len(lines) == n and {r["status"] for r in lines} == {"ok"}, lines
        assert {r["outputs"]["six"] for r in lines} == {version}
        prefixes = {r["outputs"]["prefix"] for r in lines}
        assert len(prefixes) == 1 and "/environments/" in prefixes.pop()
        assert {r["provenance"]["environment"]["installed_from"] for r in lines} == {"wheels"}
        assert [r["provenance"]["environment"]["built"] for r in lines].count(True) == 1  # built once
    assert len({r["provenance"]["worker"] for lines in results.values() for r in lines}) == 1
    assert results[VERSIONS[0]][0]["outputs"]["prefix"] != results[VERSIONS[1]][0]["outputs"]["prefix"]
