"""Fixtures for the container tests: the Docker engine and the built image.

Missing prerequisites fail the tests under CI (CI=true) and skip them, with the reason, elsewhere.
"""

from __future__ import annotations

import subprocess

import pytest
from container_support import docker, project_version, unavailable


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


@pytest.fixture(scope="session")
def image(engine) -> str:
    ref = f"modelops-dask:{project_version()}"
    if docker("image", "inspect", ref, check=False).returncode != 0:
        unavailable(f"image {ref} is not built (make image-offline)")
    return ref
