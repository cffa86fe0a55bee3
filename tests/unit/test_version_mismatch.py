"""Client/cluster modelops version mismatch: reported once, naming both versions and the workers."""

from __future__ import annotations

import modelops
from modelops.services.dask_simulation import DaskSimulationService


class NoClient:
    """version_mismatch() gets the runtimes given; it never talks to a cluster here."""


def test_same_version_reports_nothing():
    service = DaskSimulationService(NoClient())
    assert service.version_mismatch({"tcp://a:1": {"modelops_version": modelops.__version__}}) is None


def test_a_mismatch_names_the_client_version_and_each_worker_version():
    service = DaskSimulationService(NoClient())
    message = service.version_mismatch({
        "tcp://a:1": {"modelops_version": modelops.__version__},
        "tcp://b:1": {"modelops_version": "9.9.9"},
        "tcp://c:1": {},
    })
    assert f"this client has {modelops.__version__}" in message
    assert "9.9.9 on 1 worker(s) (tcp://b:1)" in message
    assert "unknown (older than 0.2) on 1 worker(s) (tcp://c:1)" in message
    assert "tcp://a:1" not in message
    assert service._versions_checked  # run() will not report it a second time
