"""Chart tests: real Helm 3 and Helm 4 binaries from .tools/ (installed by `make tools`).

A missing tool is a failure, not a skip: `make test` installs them first, so their absence means
the tooling is broken, and a chart suite that silently skips proves nothing.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from chartlib import HELMS, TOOLS_BIN, Helm


def _helm(name: str) -> Helm:
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: run `make tools` (bash scripts/install-tools.sh)", pytrace=False)
    version = subprocess.run(
        [str(path), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not version.startswith(HELMS[name]):
        pytest.fail(f"{path} reports {version}, expected {HELMS[name]}x", pytrace=False)
    return Helm(name, path)


@pytest.fixture(params=sorted(HELMS), scope="session")
def helm(request) -> Helm:
    """Each chart test runs once with Helm 4 (`helm`) and once with Helm 3 (`helm3`)."""
    return _helm(request.param)


@pytest.fixture(scope="session")
def helm4() -> Helm:
    return _helm("helm")
