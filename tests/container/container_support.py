"""The container tier: the worker image on the local Docker engine, checked as an artifact (its
contract, entrypoint and offline build). How its pods behave in a cluster is the cluster tier's job
(tests/cluster), on a real Kubernetes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> None:
    """Missing prerequisite: a failure under CI (CI=true), a skip with the reason elsewhere."""
    skip_or_fail(reason, required_by="CI")


def project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def docker(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc
