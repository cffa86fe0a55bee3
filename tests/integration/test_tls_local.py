"""TLS with client certificates between real Dask processes (issue 21, section 3).

A real `dask scheduler --protocol tls` and `dask worker --preload modelops.worker.preload` started with
the environment the chart gives its pods (`modelops.tls.dask_tls_env`), certificates made by the test
with the openssl CLI: a study runs over tls:// with a certificate signed by the cluster's CA, and the
attacks the defence stops are tried for real: a plaintext client, a client whose certificate another
CA signed, a TLS client without any certificate.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security

from modelops.local_cluster import LocalProcessCluster
from modelops.tls import ClientTLS, dask_tls_env
from tests.helpers import clean_env, make_tls_dir

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
MOPS = [sys.executable, "-m", "modelops.cli.main"]

if shutil.which("openssl") is None:
    pytest.skip("the openssl CLI makes this module's certificates", allow_module_level=True)


def mops(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MOPS, *args], capture_output=True, text=True, env={**clean_env(), **(env or {})},
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_dir(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    """One TLS scheduler and one cold worker, configured only by their environment, as the chart's pods are."""
    cluster = LocalProcessCluster.over_tls(
        certs["dir"], ClientTLS(str(certs["ca"]), str(certs["cert"]), str(certs["key"])),
        env={"MODELOPS_BUNDLES_DIR": str(REPO / "examples"), "MODELOPS_EXECUTOR_TYPE": "cold"},
        n_workers=1,
        log_dir=tmp_path_factory.mktemp("tls-cluster"),
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def host_port(address: str) -> tuple[str, int]:
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def test_the_cluster_listens_on_tls_only(tls_cluster):
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    with Client(tls_cluster.address, security=tls_cluster.client_security, timeout=30) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert workers and all(address.startswith("tls://") for address in workers), workers


def test_a_study_runs_over_tls_with_a_client_certificate_signed_by_the_ca(tls_cluster, certs, tmp_path):
    output = tmp_path / "results.jsonl"
    done = mops("run", "examples/sir/study.json", "--scheduler", tls_cluster.address,
                "--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"]),
                "--output", str(output), "--progress", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == 12 and {r["status"] for r in results} == {"ok"}
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    assert len({(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results}) == 12
    assert "tasks: 12  succeeded: 12  failed: 0" in done.stdout


def test_doctor_takes_the_certificate_from_the_dask_configuration(tls_cluster, certs):
    """No options: distributed.comm.tls.* from DASK_* variables, as the chart's helm test pods have them."""
    env = dask_tls_env(certs["dir"])
    done = mops("doctor", "--scheduler", tls_cluster.address, "--expect-executor", "cold", "--probe-tasks", "2",
                "--timeout", "60", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 1 worker(s) OK (executor cold)" in done.stdout


def test_a_plaintext_client_is_refused(tls_cluster):
    plain = "tcp://" + tls_cluster.address.split("://", 1)[1]
    with pytest.raises(OSError):
        Client(plain, timeout=5)
    done = mops("run", "examples/sir/study.json", "--scheduler", plain, "--wait-workers", "5", timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"cannot reach scheduler {plain}" in done.stderr


def test_a_client_with_a_certificate_from_another_ca_is_refused(tls_cluster, certs):
    """The outsider trusts the cluster's CA (so only the scheduler's check of the client can stop it)."""
    outsider = Security(require_encryption=True, tls_ca_file=str(certs["ca"]),
                        tls_client_cert=str(certs["foreign_cert"]), tls_client_key=str(certs["foreign_key"]))
    with pytest.raises(OSError):
        Client(tls_cluster.address, security=outsider, timeout=5)
    done = mops("doctor", "--scheduler", tls_cluster.address, "--tls-ca-file", str(certs["ca"]),
                "--tls-cert", str(certs["foreign_cert"]), "--tls-key", str(certs["foreign_key"]), "--timeout", "5",
                timeout=120)
    assert done.returncode == 2 and f"cannot reach scheduler {tls_cluster.address}" in done.stderr, done.stderr


def _handshake_then_read(address: str, ca: Path, cert: tuple[Path, Path] | None) -> bytes:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.check_hostname = False
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    with socket.create_connection(host_port(address), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            tls.settimeout(3)
            return tls.recv(1)  # Dask's handshake message from the scheduler, or the refusal's alert


def test_a_tls_client_without_a_certificate_is_refused(tls_cluster, certs):
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        data = _handshake_then_read(tls_cluster.address, certs["ca"], None)
        assert data != b"", "the scheduler closed the connection without an alert"
    assert "CERTIFICATE_REQUIRED" in str(refused.value) or isinstance(refused.value, ConnectionResetError), \
        refused.value
    # the same probe with the cluster's certificate gets the scheduler's first bytes (Dask's handshake): the
    # refusal above is the scheduler's check of client certificates, not this probe's way of talking
    assert _handshake_then_read(tls_cluster.address, certs["ca"], (certs["cert"], certs["key"])) != b""


def test_mops_drain_reaches_a_tls_worker_with_the_pods_configuration(tls_cluster, certs):
    """`mops drain` (the worker pod's preStop hook) talks to tls:// workers with the pod's certificate."""
    proc = tls_cluster.start_worker(name="drained")
    tls_cluster.wait_for_workers(2)
    with Client(tls_cluster.address, security=tls_cluster.client_security, timeout=30) as client:
        address = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "drained")
    without = mops("drain", "--timeout", "5", "--worker", address, timeout=120)
    assert without.returncode == 1 and '"error"' in without.stdout, without.stdout + without.stderr
    done = mops("drain", "--timeout", "5", "--worker", address, env=dask_tls_env(certs["dir"]), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["worker"] == address and "error" not in outcome and outcome["unfinished"] == 0
    proc.terminate()
