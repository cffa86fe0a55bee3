"""Shared by the tests that use the local cluster's OCI registry (cluster/lib.sh: localhost:5000).

tests/registry runs in the cluster tier (cluster/test-tier.sh), after `make cluster-up` started the
registry; elsewhere these tests skip with the reason, or fail under MODELOPS_CLUSTER_REQUIRED=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.helpers import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
SIR = REPO / "examples" / "sir"
CLUSTER_STATE = Path(os.environ.get("MODELOPS_CLUSTER_STATE", "/var/tmp/modelops-cluster"))


def unavailable(reason: str) -> None:
    skip_or_fail(reason, required_by="MODELOPS_CLUSTER_REQUIRED")


def registry_address() -> str:
    """The registry of `make cluster-up` (.cluster/env exports REGISTRY), or skip/fail with why."""
    address = os.environ.get("REGISTRY") or f"localhost:{os.environ.get('MODELOPS_REGISTRY_PORT', '5000')}"
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=5) as response:
            assert response.status == 200
    except (OSError, AssertionError) as exc:
        unavailable(f"no OCI registry answers at http://{address}/v2/ (make cluster-up): {exc}")
    return address


def mops_bundle(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line (`python -m modelops.cli.bundle_cmd` = `mops bundle`)."""
    return subprocess.run([sys.executable, "-m", "modelops.cli.bundle_cmd", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def pushed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71, result.stdout
    return digest


def copy_bundle(target: Path, mtime: float, marker: str, lock: bool = False) -> Path:
    shutil.copytree(SIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "marker.txt").write_text(marker)  # unique content: unique blobs in the shared registry
    if lock:
        (target / "requirements.txt").write_text("six==1.17.0\n")
    for path in target.rglob("*"):
        os.utime(path, (mtime, mtime))
    return target
