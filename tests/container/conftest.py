"""Fixtures for the container tests: the Docker engine, the built image, the rendered chart.

Missing prerequisites fail the tests under CI (CI=true) and skip them, with the reason, elsewhere.
"""

from __future__ import annotations

import subprocess

import pytest
from container_support import (
    CHART,
    HELM,
    VALUES,
    Containers,
    docker,
    project_version,
    remove_leftovers,
    unavailable,
)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/container/" in str(item.fspath):
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def engine() -> None:
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        unavailable("no docker CLI on PATH (make docker-engine)")
    except subprocess.TimeoutExpired:
        unavailable("'docker info' timed out")
    if proc.returncode != 0:
        unavailable(f"no Docker engine answers 'docker info' (make docker-engine): {proc.stderr.strip()}")
    # Leftovers of an interrupted earlier run (not those of another live session).
    remove_leftovers()


@pytest.fixture(scope="session")
def image(engine) -> str:
    ref = f"modelops-dask:{project_version()}"
    if docker("image", "inspect", ref, check=False).returncode != 0:
        unavailable(f"image {ref} is not built (make image-offline)")
    return ref


@pytest.fixture(scope="session")
def chart() -> None:
    if not HELM.exists():
        unavailable(f"{HELM} is missing (make tools)")
    if not (CHART / "Chart.yaml").exists():
        unavailable(f"no chart at {CHART}")
    for name in ("cold.yaml", "warm.yaml"):
        if not (VALUES / name).exists():
            unavailable(f"no values file values/{name}")


@pytest.fixture
def containers(request):
    """Containers started by one test; logs dumped when it failed, all removed afterwards."""
    c = Containers()
    yield c
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(c.dump())
    c.remove_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
