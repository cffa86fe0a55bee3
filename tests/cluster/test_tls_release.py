"""A TLS release (tls.enabled, the chart's own CA; values/cold.yaml, two worker pods): a cold study from
this machine over tls:// through a port-forward gives a fresh (pod, PID) per task, with the release's
certificate and with a client certificate issued from the CA as the README shows; a plaintext client
and a client whose certificate another CA signed are refused; `helm test` passes (its pods are TLS
clients); `helm upgrade` keeps the CA and the certificates issued from it."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest
from cluster_support import MOPS, REPO, check_fresh_process_per_task, load_results, run

from tests.helpers import make_tls_dir

STUDY = REPO / "examples" / "sir" / "study.json"
N_STUDY_TASKS = len(json.loads(STUDY.read_text())["parameters"]) * json.loads(STUDY.read_text())["replicates"]
VALUES = ["cold.yaml", "local.yaml"]
SETS = ["worker.replicas=2", "tls.enabled=true"]


@pytest.fixture(scope="module")
def tls_release(releases):
    rel = releases.new()
    rel.install(VALUES, sets=SETS)
    return rel


def secret_data(rel, name: str) -> dict[str, bytes]:
    data = json.loads(rel.kubectl("get", "secret", name, "-o", "json"))["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def tls_secret_name(rel) -> str:
    return f"{rel.name}-modelops-dask-tls"


@pytest.fixture(scope="module")
def client_files(tls_release, tmp_path_factory) -> dict[str, str]:
    """ca.crt, tls.crt and tls.key read from the release's Secret, as a laptop user with read access does."""
    directory = tmp_path_factory.mktemp("release-tls")
    for key, value in secret_data(tls_release, tls_secret_name(tls_release)).items():
        (directory / key).write_bytes(value)
        (directory / key).chmod(0o600)
    return {"ca": str(directory / "ca.crt"), "cert": str(directory / "tls.crt"), "key": str(directory / "tls.key")}


def mops_over_tls(rel, files: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`mops ARGS --scheduler tls://127.0.0.1:PORT --tls-*` through a port-forward to the scheduler."""
    with rel.port_forward() as address:
        tls_address = address.replace("tcp://", "tls://", 1)
        return run([str(MOPS), *args, "--scheduler", tls_address, "--tls-ca-file", files["ca"],
                    "--tls-cert", files["cert"], "--tls-key", files["key"]], timeout=timeout, check=False)


def test_scheduler_and_workers_listen_on_tls(tls_release):
    scheduler = tls_release.pods("app.kubernetes.io/component=scheduler")[0]["metadata"]["name"]
    assert re.search(r"Scheduler at:\s+tls://", tls_release.logs(scheduler)), tls_release.logs(scheduler)[-2000:]
    for pod in tls_release.pods():
        log = tls_release.wait_for_log(pod["metadata"]["name"], "Cold start: fork")
        assert re.search(r"Start worker at:\s+tls://", log) and not re.search(r"Start worker at:\s+tcp://", log), \
            log[-2000:]


def test_cold_study_over_tls_through_a_port_forward(tls_release, client_files, tmp_path):
    output = tmp_path / "results.jsonl"
    done = mops_over_tls(tls_release, client_files, "run", str(STUDY), "--output", str(output))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = load_results(output.read_text())
    assert all(r["provenance"]["worker"].startswith("tls://") for r in results)
    check_fresh_process_per_task(tls_release, results, N_STUDY_TASKS)


def test_a_client_certificate_issued_from_the_release_ca_is_accepted(tls_release, client_files, tmp_path):
    """The README's way for a laptop: a certificate of its own, signed with the CA key of <release>-tls-ca."""
    ca = secret_data(tls_release, f"{tls_secret_name(tls_release)}-ca")
    (tmp_path / "ca.crt").write_bytes(ca["tls.crt"])
    (tmp_path / "ca.key").write_bytes(ca["tls.key"])
    (tmp_path / "ca.key").chmod(0o600)
    for cmd in (["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "laptop.key", "-out", "laptop.csr", "-subj", "/CN=laptop"],
                ["openssl", "x509", "-req", "-in", "laptop.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "30", "-out", "laptop.crt"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    files = {"ca": client_files["ca"], "cert": str(tmp_path / "laptop.crt"), "key": str(tmp_path / "laptop.key")}
    done = mops_over_tls(tls_release, files, "doctor", "--expect-executor", "cold", "--min-workers", "2",
                         "--probe-tasks", "2", "--timeout", "120")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 2 worker(s) OK (executor cold)" in done.stdout


def test_a_plaintext_client_is_refused(tls_release):
    with tls_release.port_forward() as address:
        done = run([str(MOPS), "run", str(STUDY), "--scheduler", address, "--wait-workers", "5"], timeout=300,
                   check=False)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"cannot reach scheduler {address}" in done.stderr


def test_a_client_with_a_certificate_from_another_ca_is_refused(tls_release, client_files, tmp_path):
    foreign = make_tls_dir(tmp_path / "foreign")
    files = {"ca": client_files["ca"], "cert": str(foreign["foreign_cert"]), "key": str(foreign["foreign_key"])}
    done = mops_over_tls(tls_release, files, "doctor", "--timeout", "10", timeout=300)
    assert done.returncode == 2 and "cannot reach scheduler tls://127.0.0.1:" in done.stderr, \
        done.stdout[-2000:] + done.stderr[-2000:]


def test_helm_test_passes(tls_release):
    out = tls_release.helm_test().stdout
    assert "Phase:" in out and "Failed" not in out, out


def test_helm_upgrade_keeps_the_ca_and_the_issued_certificates(tls_release, client_files, tmp_path):
    name = tls_secret_name(tls_release)
    before, before_ca = secret_data(tls_release, name), secret_data(tls_release, f"{name}-ca")
    tls_release.upgrade(VALUES, sets=[*SETS, "tests.probeTasks=3"])  # a real change: a new revision
    assert len(tls_release.history()) >= 2
    assert secret_data(tls_release, name) == before
    assert secret_data(tls_release, f"{name}-ca") == before_ca
    tls_release.wait_rollout()
    # the files a laptop took before the upgrade still work
    output = tmp_path / "after-upgrade.jsonl"
    done = mops_over_tls(tls_release, client_files, "run", str(STUDY), "--output", str(output))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_fresh_process_per_task(tls_release, load_results(output.read_text()), N_STUDY_TASKS)
