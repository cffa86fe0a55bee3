"""tls.enabled rendered, then used for real: the chart's own CA and certificate (genCA/genSignedCert) and
the DASK_DISTRIBUTED__COMM__* variables it gives its pods start a real TLS scheduler and worker; a
client with that certificate runs a task, one with another CA's certificate is refused. Every Dask
pod (scheduler, workers of every group, helm test pods, the runner Job template) gets the same
variables and the Secret's three files, and `mops jobs submit` turns runner.json's "tls" into the
runner's `mops run --tls-*` arguments."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security

from chartlib import NAMESPACE, RELEASE, env_of, workers
from modelops.jobs.manifests import runner_args, runner_job
from modelops.local_cluster import LocalProcessCluster
from modelops.tls import dask_tls_env
from tests.helpers import make_tls_dir

pytestmark = pytest.mark.chart
FULLNAME = f"{RELEASE}-modelops-dask"
MOUNT = "/etc/modelops/tls"
TLS_ON = ("--set", "tls.enabled=true", "--set", "jobs.enabled=true", "--set", "worker.groups.cold.executor.type=cold")


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def dask_env(container: dict) -> dict[str, str]:
    return {k: v for k, v in env_of(container).items() if k.startswith("DASK_DISTRIBUTED__COMM__")}


def tls_volume(pod_spec: dict) -> dict:
    return next(v for v in pod_spec["volumes"] if v["name"] == "dask-tls")


def test_every_dask_pod_gets_the_variables_dask_reads_and_the_secret(helm):
    objects = helm.template(*TLS_ON)
    expected = dask_tls_env(MOUNT)  # what tests/unit/test_tls_options.py proves Dask reads
    scheduler = one(objects, "Deployment", f"{FULLNAME}-scheduler")["spec"]["template"]["spec"]
    tests = [o["spec"] for o in objects if o["kind"] == "Pod"]
    pods = [scheduler] + [w["spec"]["template"]["spec"] for w in workers(objects)] + tests
    assert len(workers(objects)) == 2 and len(tests) == 2
    for pod in pods:
        container = pod["containers"][0]
        assert dask_env(container) == expected, container["name"]
        assert {"name": "dask-tls", "mountPath": MOUNT, "readOnly": True} in container["volumeMounts"]
        assert tls_volume(pod)["secret"]["secretName"] == f"{FULLNAME}-tls"
    args = scheduler["containers"][0]["args"]
    assert args[args.index("--protocol") + 1] == "tls"
    for w in workers(objects):
        assert w["spec"]["template"]["spec"]["containers"][0]["args"][1] == f"tls://{FULLNAME}-scheduler:8786"


def test_the_runner_job_gets_the_certificate_and_its_mops_run_the_flags(helm):
    objects = helm.template(*TLS_ON)
    doc = json.loads(one(objects, "ConfigMap", f"{FULLNAME}-jobs")["data"]["runner.json"])
    assert doc["scheduler"] == f"tls://{FULLNAME}-scheduler:8786"
    assert doc["tls"] == {"caFile": f"{MOUNT}/ca.crt", "certFile": f"{MOUNT}/tls.crt", "keyFile": f"{MOUNT}/tls.key"}
    args = runner_args("/etc/modelops/study/study.json", doc["scheduler"], doc["store"], "j-1", tls=doc["tls"])
    job = runner_job(doc["job"], "j-1", "sir", args)
    pod = job["spec"]["template"]["spec"]
    runner = pod["containers"][0]
    assert runner["args"][runner["args"].index("--tls-cert") + 1] == f"{MOUNT}/tls.crt"
    assert {"name": "dask-tls", "mountPath": MOUNT, "readOnly": True} in runner["volumeMounts"]
    assert tls_volume(pod)["secret"]["secretName"] == f"{FULLNAME}-tls"
    # and from the Dask configuration, for a runner whose submitter did not pass the flags
    assert dask_env(runner) == dask_tls_env(MOUNT)


def test_an_existing_secret_replaces_the_generated_one(helm):
    objects = helm.template(*TLS_ON, "--set", "tls.existingSecret=corp-dask-tls")
    assert not [o for o in objects if o["kind"] == "Secret" and "tls" in o["metadata"]["name"]]
    for w in workers(objects):
        assert tls_volume(w["spec"]["template"]["spec"])["secret"]["secretName"] == "corp-dask-tls"


def test_the_schema_refuses_a_misspelt_tls_key(helm):
    proc = helm.run("template", RELEASE, "charts/modelops-dask", "--set", "tls.enable=true", check=False)
    assert proc.returncode != 0 and "enable" in proc.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory, helm4) -> Path:
    """The chart-generated CA and certificate (Helm 4), as the pods mount them."""
    objects = helm4.template("--set", "tls.enabled=true")
    secret = one(objects, "Secret", f"{FULLNAME}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    directory = tmp_path_factory.mktemp("chart-tls")
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (directory / key).write_bytes(base64.b64decode(secret["data"][key]))
    ca = one(objects, "Secret", f"{FULLNAME}-tls-ca")
    (directory / "ca.key").write_bytes(base64.b64decode(ca["data"]["tls.key"]))
    assert base64.b64decode(ca["data"]["tls.crt"]) == (directory / "ca.crt").read_bytes()
    return directory


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI checks the generated certificate")
def test_the_generated_certificate_is_signed_by_the_generated_ca_for_the_schedulers_names(generated):
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(generated / "ca.crt"), str(generated / "tls.crt")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(generated / "tls.crt")],
                          capture_output=True, text=True, check=True).stdout
    assert f"DNS:{FULLNAME}-scheduler.{NAMESPACE}.svc" in text
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the foreign certificate")
def test_real_dask_processes_talk_tls_with_the_chart_generated_certificate(generated, tmp_path):
    env = dask_tls_env(generated)
    bundles = Path(__file__).resolve().parents[2] / "examples"
    cluster = LocalProcessCluster(n_workers=1, env={**env, "MODELOPS_EXECUTOR_TYPE": "direct",
                                                    "MODELOPS_BUNDLES_DIR": str(bundles)},
                                  log_dir=tmp_path / "cluster", protocol="tls", scheduler_env=env,
                                  client_security=Security(require_encryption=True,
                                                           tls_ca_file=str(generated / "ca.crt"),
                                                           tls_client_cert=str(generated / "tls.crt"),
                                                           tls_client_key=str(generated / "tls.key")))
    try:
        cluster.start(timeout=60)
        with Client(cluster.address, security=cluster.client_security, timeout=30) as client:
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        foreign = make_tls_dir(tmp_path / "foreign")
        outsider = Security(require_encryption=True, tls_ca_file=str(generated / "ca.crt"),
                            tls_client_cert=str(foreign["foreign_cert"]), tls_client_key=str(foreign["foreign_key"]))
        with pytest.raises(OSError):
            Client(cluster.address, security=outsider, timeout=5)
    finally:
        cluster.close()
