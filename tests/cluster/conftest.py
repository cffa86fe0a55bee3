"""Fixtures of the real-cluster tier: the chart installed from an OCI registry on a live Kubernetes.

The cluster comes from `.cluster/env` (written by `make cluster-up`; `MODELOPS_CLUSTER_ENV` names
another file, e.g. for kind). Where there is none, or it does not answer, the tests skip with the
reason, and fail instead when MODELOPS_CLUSTER_REQUIRED=1 (`make test` sets it where it brought the
cluster up itself). Every module gets its own namespaces, unique per test session, removed at the end.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from cluster_support import HELMS, MOPS, REPO, Release, Target

from tests.helpers import skip_or_fail

SESSION = uuid.uuid4().hex[:5]
# Namespaces of this suite carry the pytest process that made them: those of a run that died (its
# process is gone) are removed at the start of the next one, never those of a run still going.
OWNER_LABEL = "modelops-dask.io/e2e-pid"
# Every namespace of the suite enforces the `restricted` Pod Security Standard: each pod the chart renders
# (and each the tests make) must be admitted under it, as in a platform team's locked-down namespace.
POD_SECURITY = {"pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.k8s)


def missing(reason: str) -> None:
    skip_or_fail(reason, required_by="MODELOPS_CLUSTER_REQUIRED")


@pytest.fixture(scope="session")
def target() -> Target:
    if os.environ.get("MODELOPS_CLUSTER_UNAVAILABLE"):
        missing(os.environ["MODELOPS_CLUSTER_UNAVAILABLE"])
    env_file = Path(os.environ.get("MODELOPS_CLUSTER_ENV") or REPO / ".cluster" / "env")
    if not env_file.exists():
        missing(f"no Kubernetes cluster: {env_file} does not exist (make cluster-up writes it)")
    for name, path in {**HELMS, "mops": MOPS}.items():
        if not path.exists():
            missing(f"{name} is missing at {path} (make venv tools)")
    try:
        t = Target.from_env_file(env_file)
    except ValueError as exc:
        missing(str(exc))
    reason = t.reachable()
    if reason:
        missing(f"the cluster of {env_file} is not usable: {reason}")
    remove_namespaces_of_dead_runs(t)
    return t


def remove_namespaces_of_dead_runs(t: Target) -> None:
    for ns in t.kubectl_json("get", "namespaces", "-l", OWNER_LABEL)["items"]:
        pid = int(ns["metadata"]["labels"][OWNER_LABEL])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            t.kubectl("delete", "namespace", ns["metadata"]["name"], "--wait=false", check=False)
        except PermissionError:
            pass


class Releases:
    """Makes releases in fresh namespaces; removes them (and the namespaces) at the end."""

    def __init__(self, target: Target, module: str):
        self.target, self.module, self.made = target, module, []

    def new(self, helm: str = "helm4") -> Release:
        n = len(self.made)
        rel = Release(self.target, helm, name=f"mops{n}", namespace=f"e2e-{SESSION}-{self.module}-{n}")
        self.target.kubectl("create", "namespace", rel.namespace)
        self.target.kubectl("label", "namespace", rel.namespace, f"{OWNER_LABEL}={os.getpid()}",
                            *(f"{k}={v}" for k, v in POD_SECURITY.items()))
        self.made.append(rel)
        return rel

    def close(self) -> None:
        for rel in self.made:
            rel.uninstall()
            self.target.kubectl("delete", "namespace", rel.namespace, "--wait=false", "--ignore-not-found",
                                check=False)


@pytest.fixture(scope="module")
def releases(target, request):
    module = request.module.__name__.removeprefix("test_").replace("_", "-")[:20]
    made = Releases(target, module)
    yield made
    made.close()


@pytest.fixture(autouse=True)
def _diagnostics_on_failure(request):
    """A failing test prints what happened in its namespaces: events, pods, logs."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "releases" not in request.fixturenames:
        return
    for rel in request.getfixturevalue("releases").made:
        print(f"===== diagnostics of {rel.namespace} =====\n{rel.diagnostics()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
