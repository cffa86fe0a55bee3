"""kind end-to-end fixtures (pytest-kind-ng, imported as ``pytest_kind``).

Needs a Docker engine, the ``kind`` and ``kubectl`` binaries (on PATH, or --kind-bin /
--kind-kubectl-bin, options of pytest-kind-ng), the kind node image (pulled, or already loaded),
helm in .tools/bin, and the built image modelops-dask:<version>. When any of these is missing the
tests skip with the reason: nothing here downloads binaries behind the user's back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from kind_support import CHART, CLUSTER_NAME, DEFAULT_NODE_IMAGE, HELM, REPO, VALUES



def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kind/" in str(item.fspath):
            item.add_marker(pytest.mark.kind)


def missing(reason: str) -> None:
    """Skip with the reason; a failure where MODELOPS_KIND_REQUIRED=1 (a CI job made for kind)."""
    if os.environ.get("MODELOPS_KIND_REQUIRED", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (MODELOPS_KIND_REQUIRED=1)", pytrace=False)
    pytest.skip(reason)


def _run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _binary(config, option: str, name: str) -> str:
    given = config.getoption(option)
    path = given or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        missing(f"{name} is not installed (put it on PATH or pass --{option.replace('_', '-')}); "
                    "see images/worker/README.md")
    return path


def _project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="session")
def kind_prereqs(request) -> dict:
    """Everything the kind tests need, or a skip that says what is missing."""
    try:
        info = _run("docker", "info", "--format", "{{.ServerVersion}}", timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        missing("no Docker engine (docker CLI missing or not answering)")
    if info.returncode != 0:
        missing(f"no Docker engine answers 'docker info': {info.stderr.strip()}")
    kind = _binary(request.config, "kind_bin", "kind")
    kubectl = _binary(request.config, "kind_kubectl_bin", "kubectl")
    if not HELM.exists():
        missing(f"{HELM} is missing (make tools)")
    if not (VALUES / "kind.yaml").exists() or not (CHART / "Chart.yaml").exists():
        missing("the chart or values/kind.yaml is missing")
    image = f"modelops-dask:{_project_version()}"
    for ref in (image, "modelops-dask:dev"):
        if _run("docker", "image", "inspect", ref).returncode != 0:
            missing(f"image {ref} is not built (make image-offline)")
    node_image = request.config.getoption("kind_image") or DEFAULT_NODE_IMAGE
    if _run("docker", "image", "inspect", node_image).returncode != 0:
        try:
            pulled = _run("docker", "pull", node_image, timeout=600)
        except subprocess.TimeoutExpired:
            missing(f"kind node image {node_image} could not be pulled (timed out)")
        if pulled.returncode != 0:
            missing(f"kind node image {node_image} is not available and cannot be pulled: "
                        f"{pulled.stderr.strip()[-300:]}")
    return {"kind": kind, "kubectl": kubectl, "image": image, "node_image": node_image}


@pytest.fixture(scope="session")
def cluster(kind_prereqs, request):
    """A kind cluster with the worker image loaded; deleted afterwards unless --keep-cluster."""
    from pytest_kind import KindCluster

    c = KindCluster(
        request.config.getoption("cluster_name") if request.config.getoption("cluster_name") != "pytest-kind"
        else CLUSTER_NAME,
        image=kind_prereqs["node_image"],
        kind_path=Path(kind_prereqs["kind"]),
        kubectl_path=Path(kind_prereqs["kubectl"]),
    )
    c.create()
    try:
        # values/kind.yaml runs modelops-dask:dev with pullPolicy Never: the image must be in the node.
        c.load_docker_image("modelops-dask:dev")
        yield c
    finally:
        if not request.config.getoption("keep_cluster"):
            c.delete()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
