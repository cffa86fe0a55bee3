"""The cluster scripts themselves, without a cluster: clear refusals, and PID records that are only
trusted while they still name the process that was started; versitygw built and run on its own as the
unit tier does. Then, on the cluster of `.cluster/env`, what up.sh adds for in-cluster studies: the
default StorageClass (local-path-provisioner) and the object store (versitygw, cluster/objectstore.sh)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cluster_support import REPO, restricted_pod, run_pod

CLUSTER = REPO / "cluster"


def bash(script: str, env: dict | None = None, user: int | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", script]
    if user is not None:
        if os.getuid() != 0 or not shutil.which("setpriv"):
            pytest.skip("needs root and setpriv to run as another user")
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


def test_up_refuses_a_user_who_is_not_root_before_doing_anything():
    proc = bash("bash cluster/up.sh --check", user=65534)
    assert proc.returncode != 0
    assert "needs root" in proc.stderr, proc.stderr


def test_up_names_the_step_that_failed(tmp_path):
    """A step of up.sh that fails (here one planted in its list, with up.sh sourced, not run) leaves
    a last line naming that step and where the logs are."""
    proc = bash("source cluster/up.sh\ntrap report_failed_phase EXIT\nstart_planted() { false; }\n"
                "phase start_planted\necho not-reached", env={"MODELOPS_CLUSTER_STATE": str(tmp_path)})
    assert proc.returncode != 0 and "not-reached" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        f"cluster: cluster/up.sh failed in step start_planted (exit 1); logs: {tmp_path}/logs"), proc.stderr


def test_a_configuration_template_with_a_value_missing_is_refused_naming_it(tmp_path):
    """cluster/config/ templates are rendered by lib.sh's render: a placeholder given no value is an
    error naming the template and the placeholder, never a file with @NAME@ left in it."""
    ok = bash("source cluster/lib.sh && render cluster/config/registry.yml DATA=/srv/r ADDR=127.0.0.1:5000")
    assert ok.returncode == 0 and "rootdirectory: /srv/r" in ok.stdout and "addr: 127.0.0.1:5000" in ok.stdout
    missing = bash("source cluster/lib.sh && render cluster/config/registry.yml DATA=/srv/r")
    assert missing.returncode != 0
    assert "cluster/config/registry.yml: no value given for @ADDR@" in missing.stderr, missing.stderr


def test_build_names_an_unknown_component_and_the_allowed_ones(tmp_path):
    proc = bash("bash cluster/build.sh kube-dns", env={"MODELOPS_CACHE_DIR": str(tmp_path)})
    assert proc.returncode != 0
    assert "unknown component 'kube-dns'" in proc.stderr
    assert "kubernetes coredns registry pause versitygw local-path-provisioner kube-network-policies keda" in proc.stderr


def test_a_component_running_with_another_command_line_is_restarted_and_one_with_the_same_kept(tmp_path):
    """How `make cluster-up` gives a running API server new flags (the aggregation layer): up.sh's
    restart_if_args_changed stops the recorded process when its command line differs, keeps it otherwise."""
    env = {"MODELOPS_CLUSTER_STATE": str(tmp_path)}
    # right after `start`, setsid may not have exec'd sleep yet: pid_of answers once it has
    started = bash("source cluster/lib.sh; start thing sleep 30 || exit 1\n"
                   "for _ in $(seq 100); do pid_of thing && exit 0; sleep 0.05; done; exit 1", env)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.strip())
    try:
        same = bash("source cluster/lib.sh; restart_if_args_changed thing sleep 30; pid_of thing", env)
        assert same.stdout.strip() == str(pid) and "restarting" not in same.stderr, same.stderr
        other = bash("source cluster/lib.sh; restart_if_args_changed thing sleep 31; pid_of thing", env)
        assert other.returncode != 0 and "thing runs with another command line: restarting it" in other.stderr
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        subprocess.run(["kill", str(pid)], capture_output=True)


def test_a_pid_record_is_trusted_only_while_it_names_the_process_started(tmp_path):
    """After a reboot or a kill, a recorded PID may belong to another program: down.sh must not stop it."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        check = "source cluster/lib.sh; pid_of thing"
        env = {"MODELOPS_CLUSTER_STATE": str(tmp_path)}
        (run / "thing.pid").write_text(f"{sleeper.pid} {os.path.realpath(shutil.which('sleep'))}\n")
        assert bash(check, env).stdout.strip() == str(sleeper.pid)
        (run / "thing.pid").write_text(f"{sleeper.pid} /usr/bin/etcd\n")
        assert bash(check, env).returncode != 0
        sleeper.kill()
        sleeper.wait()
        (run / "thing.pid").write_text(f"{sleeper.pid} {os.path.realpath(shutil.which('sleep'))}\n")
        assert bash(check, env).returncode != 0
    finally:
        sleeper.kill()


def test_daemons_started_by_the_scripts_do_not_hold_the_callers_lock(tmp_path):
    """`flock LOCK bash cluster/up.sh` once left the lock held for as long as the cluster ran (its
    daemons inherited the lock's descriptor): close_inherited_fds closes it before anything starts."""
    if not shutil.which("flock") or not shutil.which("setsid"):
        pytest.skip("needs flock and setsid (util-linux)")
    lock = tmp_path / "lock"
    script = "source cluster/lib.sh; close_inherited_fds; setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!"
    started = subprocess.run(["flock", str(lock), "bash", "-c", script], capture_output=True, text=True, timeout=30,
                             cwd=REPO)
    daemon = int(started.stdout.strip().splitlines()[-1])
    try:
        free = subprocess.run(["flock", "-w", "2", str(lock), "true"], timeout=30)
        assert free.returncode == 0, "the daemon still holds the caller's lock"
    finally:
        os.kill(daemon, 9)


# --- the object store and the volume provisioner (issue 20) ------------------------------------------
def s3_module():
    """cluster/s3-request.py, the stdlib SigV4 client the scripts use, loaded as a module."""
    spec = importlib.util.spec_from_file_location("s3_request", CLUSTER / "s3-request.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_objectstore_refuses_a_user_who_is_not_root_and_names_its_commands():
    proc = bash("bash cluster/objectstore.sh start", user=65534)
    assert proc.returncode != 0 and "needs root" in proc.stderr, proc.stderr
    proc = bash("bash cluster/objectstore.sh restart")
    assert proc.returncode != 0 and "start|stop|status" in proc.stderr, proc.stderr


def test_versitygw_builds_without_a_cluster_and_serves_a_private_store_on_loopback(tmp_path):
    """What the unit tier's fixtures do: `cluster/build.sh versitygw` (no root, no cluster) prints the bin
    directory last; a private versitygw on 127.0.0.1 with its own directory takes signed requests, with
    its credentials in its environment only (not on its command line, not in its log)."""
    built = subprocess.run(["bash", "cluster/build.sh", "versitygw"], capture_output=True, text=True, timeout=900,
                           cwd=REPO)
    assert built.returncode == 0, built.stderr[-2000:]
    binary = Path(built.stdout.strip().splitlines()[-1]) / "versitygw"
    assert os.access(binary, os.X_OK), binary
    port, secret = free_port(), uuid.uuid4().hex
    creds = tmp_path / "credentials"
    creds.write_text(f"AWS_ACCESS_KEY_ID=UNITKEY{port}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    (tmp_path / "data").mkdir()
    log = (tmp_path / "log").open("wb")
    server = subprocess.Popen([str(binary), "--port", f"127.0.0.1:{port}", "posix", str(tmp_path / "data")],
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "ROOT_ACCESS_KEY": f"UNITKEY{port}", "ROOT_SECRET_KEY": secret})
    try:
        s3, url = s3_module(), f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while refuses("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.1)
        assert s3.request("PUT", f"{url}/unit-bucket", str(creds))[0] == 200
        assert s3.request("PUT", f"{url}/unit-bucket/a dir/r 1.json", str(creds), b'{"x": 1}')[0] == 200
        assert s3.request("GET", f"{url}/unit-bucket/a%20dir/r%201.json", str(creds)) == (200, b'{"x": 1}')
        status, body = s3.request("GET", f"{url}/unit-bucket?list-type=2&prefix=a dir/", str(creds))
        assert status == 200 and b"<Key>a dir/r 1.json</Key>" in body, body
        # A wrong secret is refused: the signature is checked, not just present.
        creds.write_text(f"AWS_ACCESS_KEY_ID=UNITKEY{port}\nAWS_SECRET_ACCESS_KEY=wrong{secret}\n")
        assert s3.request("GET", f"{url}/unit-bucket/a%20dir/r%201.json", str(creds))[0] == 403
        assert secret not in Path(f"/proc/{server.pid}/cmdline").read_text()
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    assert secret not in (tmp_path / "log").read_text()


def cluster_env() -> dict[str, str]:
    """The `export NAME=value` lines of the cluster's env file (as conftest's `target` reads it)."""
    path = Path(os.environ.get("MODELOPS_CLUSTER_ENV") or REPO / ".cluster" / "env")
    return dict(re.findall(r"^export (\w+)=(.*)$", path.read_text(), flags=re.M))


@pytest.fixture(scope="module")
def scratch(releases):
    """A namespace of this module's own (labelled and removed like every release's)."""
    return releases.new()


def test_a_claim_of_the_default_class_binds_and_a_restricted_pod_writes_to_it(target, scratch):
    """A claim naming no class gets the default one (STORAGE_CLASS); it binds when a pod uses it
    (WaitForFirstConsumer), that pod (UID 10001, fsGroup 10001, read-only root) writes and reads a file
    in it, and deleting the claim deletes its volume (reclaimPolicy Delete)."""
    storage_class = cluster_env().get("STORAGE_CLASS")
    if not storage_class:
        pytest.skip("the cluster's env file names no STORAGE_CLASS")
    default = [c["metadata"]["name"] for c in target.kubectl_json("get", "storageclass")["items"]
               if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert default == [storage_class]
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "results"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}
    scratch.kubectl("apply", "-f", "-", stdin=json.dumps(claim))
    pvc = scratch.target.kubectl_json("--namespace", scratch.namespace, "get", "pvc", "results")
    assert pvc["spec"]["storageClassName"] == storage_class and pvc["status"]["phase"] == "Pending"
    t0 = time.monotonic()
    out = run_pod(scratch, restricted_pod(
        "writer", target.image,
        "id -u; echo written-by-10001 > /results/r.txt && mkdir -p /results/a/b && cat /results/r.txt",
        [{"name": "results", "persistentVolumeClaim": {"claimName": "results"}}],
        [{"name": "results", "mountPath": "/results"}]))
    print(f"claim bound and pod done in {time.monotonic() - t0:.1f}s")
    assert out.split() == ["10001", "written-by-10001"], out
    pvc = scratch.target.kubectl_json("--namespace", scratch.namespace, "get", "pvc", "results")
    assert pvc["status"]["phase"] == "Bound"
    volume = pvc["spec"]["volumeName"]
    scratch.kubectl("delete", "pod", "writer", "--wait=true")
    scratch.kubectl("delete", "pvc", "results", "--wait=true")
    deadline = time.monotonic() + 60
    while target.kubectl("get", "pv", volume, "--ignore-not-found", "-o", "name").strip():
        assert time.monotonic() < deadline, f"volume {volume} not deleted 60s after its claim"
        time.sleep(1)


@pytest.fixture(scope="module")
def s3_env(target):
    env = cluster_env()
    if not env.get("S3_ENDPOINT"):
        pytest.skip("the cluster's env file names no object store (S3_ENDPOINT): kind runs have none")
    return env


def test_the_object_store_answers_this_machine_and_pods_on_the_bridge(target, scratch, s3_env):
    """Signed requests with S3_CREDENTIALS_FILE: this machine lists the buckets and puts an object; a
    restricted pod (credentials from a Secret) reads it at the same endpoint and puts one this machine reads."""
    s3, creds = s3_module(), s3_env["S3_CREDENTIALS_FILE"]
    endpoint, bucket, key = s3_env["S3_ENDPOINT"], s3_env["S3_BUCKET"], f"e2e-{uuid.uuid4().hex[:8]}"
    status, listing = s3.request("GET", f"{endpoint}/", creds)
    assert status == 200 and f"<Name>{bucket}</Name>".encode() in listing, listing
    assert s3.request("PUT", f"{endpoint}/{bucket}/{key}/from-host", creds, b"host->pod")[0] == 200
    try:
        scratch.kubectl("create", "secret", "generic", "s3", f"--from-file=credentials={creds}")
        scratch.kubectl("create", "configmap", "s3-request", f"--from-file={CLUSTER / 's3-request.py'}")
        script = ('set -e; s3() { python /s3/s3-request.py --credentials /creds/credentials "$@"; }; '
                  's3 GET "$S3_ENDPOINT/$S3_BUCKET/$KEY/from-host"; echo; '
                  'printf pod-to-host | s3 PUT "$S3_ENDPOINT/$S3_BUCKET/$KEY/from-pod"')
        out = run_pod(scratch, restricted_pod(
            "s3-client", target.image, script,
            [{"name": "creds", "secret": {"secretName": "s3", "defaultMode": 0o440}},
             {"name": "code", "configMap": {"name": "s3-request"}}],
            [{"name": "creds", "mountPath": "/creds", "readOnly": True}, {"name": "code", "mountPath": "/s3"}],
            env={"S3_ENDPOINT": endpoint, "S3_BUCKET": bucket, "KEY": key}))
        assert out.strip() == "host->pod", out
        assert s3.request("GET", f"{endpoint}/{bucket}/{key}/from-pod", creds) == (200, b"pod-to-host")
    finally:
        for name in ("from-host", "from-pod"):
            s3.request("DELETE", f"{endpoint}/{bucket}/{key}/{name}", creds)


def test_objectstore_stop_refuses_connections_and_start_brings_the_same_data_back(s3_env):
    """What the 'object store stopped mid-study' tests do: stop (by its recorded PID) returns once the
    port refuses; start (as up.sh does) serves the data written before."""
    if os.getuid() != 0:
        pytest.skip("cluster/objectstore.sh needs root")
    s3, creds = s3_module(), s3_env["S3_CREDENTIALS_FILE"]
    endpoint, bucket = s3_env["S3_ENDPOINT"], s3_env["S3_BUCKET"]
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    url, payload = f"{endpoint}/{bucket}/e2e-restart-{uuid.uuid4().hex[:8]}", uuid.uuid4().bytes
    assert s3.request("PUT", url, creds, payload)[0] == 200
    try:
        t0 = time.monotonic()
        stop = bash("bash cluster/objectstore.sh stop")
        assert stop.returncode == 0, stop.stderr
        assert refuses(host, int(port))
        status = bash("bash cluster/objectstore.sh status")
        assert (status.returncode, status.stdout.strip()) == (3, "stopped")
        start = bash("bash cluster/objectstore.sh start")
        assert start.returncode == 0, start.stderr
        print(f"object store stopped and started in {time.monotonic() - t0:.1f}s")
        status = bash("bash cluster/objectstore.sh status")
        assert status.returncode == 0 and status.stdout.startswith("running (pid "), status.stdout
        assert s3.request("GET", url, creds) == (200, payload)
    finally:
        if bash("bash cluster/objectstore.sh status").returncode != 0:
            bash("bash cluster/objectstore.sh start")
        s3.request("DELETE", url, creds)
