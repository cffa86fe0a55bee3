"""Every values file in values/ installs from the registry, every worker group runs the executor its
file names (env in the pod spec, and the pods' own log lines), `helm test` passes for every group,
and `helm uninstall` leaves no pod, job or volume claim behind (the test pods included)."""

from __future__ import annotations

import re

import pytest
from cluster_support import GROUP_LABEL, VALUES, executor_of, wait_until_gone

# Each file users pass to `helm install -f`, with the overlays that fit it on one small node.
FILES = {
    "cold.yaml": ["local.yaml"],
    "warm.yaml": ["local.yaml"],
    "production.yaml": ["local.yaml", "local-production.yaml"],
}
OVERLAYS = {"local.yaml", "local-production.yaml"}


def test_every_values_file_is_installed_here():
    assert {p.name for p in VALUES.glob("*.yaml")} == set(FILES) | OVERLAYS


def helm_test_phases(output: str) -> dict[str, str]:
    """{test pod: phase} from `helm test` output (helm 3 and 4 print the same blocks)."""
    return dict(re.findall(r"TEST SUITE:\s+(\S+)\n(?:.*\n)*?Phase:\s+(\S+)", output))


@pytest.mark.parametrize("values_file", sorted(FILES))
def test_values_file_installs_serves_and_uninstalls_clean(values_file, releases):
    files = [values_file, *FILES[values_file]]
    expected = executor_of(files)
    rel = releases.new()
    rel.install(files)

    pods = rel.pods()
    assert {p["metadata"]["labels"][GROUP_LABEL] for p in pods} == set(expected), "a worker group has no running pod"
    for pod in pods:
        name, group = pod["metadata"]["name"], pod["metadata"]["labels"][GROUP_LABEL]
        want = expected[group]
        (worker,) = [c for c in pod["spec"]["containers"] if c["name"] == "worker"]
        env = {e["name"]: e.get("value") for e in worker.get("env", [])}
        assert env.get("MODELOPS_EXECUTOR_TYPE") == want["type"], f"{name} ({group}): {env}"
        log = rel.wait_for_log(name, f"Executor: {want['type']}")
        assert "Bundle source: " in log
        if want["type"] == "cold":
            assert f"Cold start: {want['coldStart']}" in log
        assert "Traceback" not in log, f"{name} logged a traceback:\n{log[-3000:]}"

    phases = helm_test_phases(rel.helm_test().stdout)
    assert set(phases) == {f"{rel.name}-modelops-dask-test-{g}" for g in expected}, phases
    assert set(phases.values()) == {"Succeeded"}, phases

    rel.uninstall()
    left = wait_until_gone(rel)
    assert not left, f"helm uninstall left {left} behind"
