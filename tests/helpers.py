"""Helpers test modules share. Test modules import from here, never from each other or from a
conftest (pytest loads conftests itself; importing one as a module loads it twice)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from modelops.benchmark.executors import EXECUTOR_ENVS as BENCH_EXECUTOR_ENVS

REPO = Path(__file__).resolve().parent.parent
TEST_BUNDLES = Path(__file__).resolve().parent / "bundles"

# Executor configurations every behaviour test runs under: id -> env (the names `mops bench` reports).
EXECUTOR_ENVS = BENCH_EXECUTOR_ENVS
CHILD_EXECUTORS = ["isolated_warm", "cold-spawn", "cold-fork"]
COLD_EXECUTORS = ["cold-spawn", "cold-fork"]


def install_native_counter(target: Path) -> Path:
    """Copy the native_counter bundle to `target` and build its C library there with `cc`."""
    shutil.copytree(TEST_BUNDLES / "native_counter", target)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(target / "libcounter.so"), str(target / "counter.c")],
        check=True,
    )
    return target


def add_bundle(root: Path, name: str, source: Path, warmup, extra_module: str | None = None) -> None:
    """A copy of `source` named `name` whose bundle.json declares `warmup` (None: no warm-up)."""
    directory = root / name
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns("__pycache__", "study.json"))
    manifest = json.loads((directory / "bundle.json").read_text())
    manifest["name"] = name
    manifest.pop("warmup", None)
    if warmup is not None:
        manifest["warmup"] = warmup
    (directory / "bundle.json").write_text(json.dumps(manifest))
    if extra_module:
        (directory / "warmup_extra.py").write_text(extra_module)


def make_task(runtime, bundle: str, params: dict | None = None, seed: int = 0):
    """A Task for `bundle` as `runtime` (a WorkerRuntime) resolves it."""
    from modelops.tasks import Task

    resolved = runtime.resolver.resolve(bundle)
    return Task(
        bundle=bundle,
        bundle_digest=resolved.digest,
        entrypoint=resolved.entrypoint,
        params=params or {},
        seed=seed,
    )


def run_task(runtime, bundle: str, params: dict | None = None, seed: int = 0):
    """Run one task of `bundle` through `runtime` as a Dask worker would; the TaskResult."""
    return runtime.execute(make_task(runtime, bundle, params, seed))


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


def clean_env() -> dict:
    """os.environ without MODELOPS_* so a test's processes see only what the test gives them."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}


def skip_or_fail(reason: str, required_by: str) -> None:
    """A prerequisite this machine lacks: a skip with the reason, or a failure where the variable
    `required_by` (CI, MODELOPS_CLUSTER_REQUIRED) says the machine must have it."""
    if os.environ.get(required_by, "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} ({required_by}={os.environ[required_by]}: this must run, not skip)", pytrace=False)
    pytest.skip(reason)


def make_wheel(dest: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel (py3-none-any) of `files` (path in the wheel -> text), built by hand: tests of
    bundle environments need two versions of one package without reaching a package index. `requires`:
    its Requires-Dist lines."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    members[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: modelops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in members.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in members.items():
            zf.writestr(path, text)
    return wheel


PROBE_BUNDLE_SOURCE = '''"""Reports which version of its pinned package it imported, from where, in which interpreter."""
import os
import sys
import time

import {module}


def simulate(params, seed):
    time.sleep(float(params.get("sleep", 0)))
    return {{"version": {module}.VERSION, "file": {module}.__file__, "python": sys.executable,
            "prefix": sys.prefix, "pid": os.getpid()}}
'''


def make_env_bundle(root: Path, name: str, package: str, version: str, wheels: bool = True) -> Path:
    """A bundle pinning `package==version` in its requirements.txt, with the wheel in wheels/ (offline)."""
    bundle = root / name
    bundle.mkdir(parents=True)
    module = package.replace("-", "_")
    (bundle / "bundle.json").write_text(json.dumps({"name": name, "version": "1", "entrypoint": "probe:simulate"}))
    (bundle / "probe.py").write_text(PROBE_BUNDLE_SOURCE.format(module=module))
    (bundle / "requirements.txt").write_text(f"{package}=={version}\n")
    if wheels:
        make_wheel(bundle / "wheels", package, version, {f"{module}/__init__.py": f"VERSION = {version!r}\n"})
    return bundle


# Two bundles pinning two versions of `six` (a small pure-Python package from the real index, pushed with
# `mops bundle push --with-wheels`). Each task says it started, then waits until a task of the other
# bundle has started too: both versions are in use at the same moment (a rendezvous, not a sleep).
SIX_VERSIONS = ("1.16.0", "1.17.0")
SIX_PROBE = '''
import os, sys, time
from pathlib import Path

import six


def simulate(params, seed):
    here = Path(params["rendezvous"])
    here.mkdir(parents=True, exist_ok=True)
    (here / f"{params['me']}-{params['i']}").touch()
    waited = 0.0
    while not any(p.name.startswith(params["other"] + "-") for p in here.iterdir()):
        if waited > 120:
            raise TimeoutError("the other bundle's tasks never started")
        time.sleep(0.02)
        waited += 0.02
    return {"six": six.__version__, "six_file": six.__file__, "prefix": sys.prefix, "pid": os.getpid()}
'''


def make_six_bundle(root: Path, version: str) -> Path:
    """A bundle whose requirements.txt pins six==VERSION, with a unique marker (fresh registry blobs)."""
    import uuid

    bundle = root / f"six-{version}"
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text(json.dumps({"name": f"six-probe-{version}", "version": "1",
                                                    "entrypoint": "probe:simulate"}))
    (bundle / "probe.py").write_text(SIX_PROBE)
    (bundle / "requirements.txt").write_text(f"six=={version}\n")
    (bundle / "marker.txt").write_text(uuid.uuid4().hex)
    return bundle


def six_study(path: Path, ref: str, version: str, n: int, rendezvous: str) -> Path:
    """A study of N tasks of the six bundle REF that meet the other version's tasks at RENDEZVOUS."""
    other = next(v for v in SIX_VERSIONS if v != version)
    path.write_text(json.dumps({"name": f"six-{version}", "bundle": ref, "parameters": [
        {"rendezvous": rendezvous, "me": version, "other": other, "i": i} for i in range(n)]}))
    return path


class S3Server:
    """A real S3-compatible server (versitygw, built by `cluster/build.sh versitygw`) on loopback, with
    its own data directory and random credentials; stopped and started again by its PID, never by name."""

    def __init__(self, binary: Path, root: Path):
        import secrets
        import socket

        self.binary, self.root = binary, root
        (root / "data").mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.access_key, self.secret_key = "test" + secrets.token_hex(6), secrets.token_hex(20)
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict:
        """What a client (mops run, a test) needs in its environment to use the store."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_REGION": "us-east-1"}

    def start(self) -> None:
        import socket

        env = {**clean_env(), "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        log = open(self.root / "versitygw.log", "ab")
        self.proc = subprocess.Popen([str(self.binary), "--port", f"127.0.0.1:{self.port}", "posix",
                                      str(self.root / "data")], env=env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()

        def answers() -> bool:
            assert self.proc.poll() is None, (self.root / "versitygw.log").read_text()[-2000:]
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(answers, timeout=30, what=f"versitygw on port {self.port}", interval=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def make_bucket(self, name: str) -> None:
        """A bucket is a directory of the posix backend."""
        (self.root / "data" / name).mkdir(exist_ok=True)


def versitygw_binary() -> Path:
    """The versitygw the cluster scripts build (cached); skip, or fail where required, when it cannot be built."""
    done = subprocess.run(["bash", str(REPO / "cluster" / "build.sh"), "versitygw"], capture_output=True, text=True,
                          timeout=1800)
    binary = Path(done.stdout.strip().splitlines()[-1]) / "versitygw" if done.returncode == 0 and done.stdout.strip() \
        else None
    if binary is None or not binary.exists():
        skip_or_fail(f"no S3 server: `cluster/build.sh versitygw` failed: {done.stderr.strip()[-500:]}",
                     required_by="MODELOPS_CLUSTER_REQUIRED")
    return binary

class LoopbackServer:
    """A real HTTP server on 127.0.0.1, in threads of the test process, whose answers the test writes:
    a package index, or an OCI registry that behaves as an attacker's would (lies about sizes, sends
    more than it said, trickles). `routes` maps a path to bytes, or to a function(handler) that answers
    itself; every request is recorded in `requests` as (method, path). Used as a context manager: the
    server and its request threads are gone when it exits (`stopping` tells slow answers to stop)."""

    def __init__(self) -> None:
        import threading

        self.routes: dict[str, object] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []  # the Authorization headers received
        self.stopping = threading.Event()
        self._server = None
        self._thread = None

    def __enter__(self) -> LoopbackServer:
        import http.server
        import threading

        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5  # an idle kept-alive connection ends, so the server can close

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                owner.requests.append((self.command, path))
                if self.headers.get("Authorization"):
                    owner.authorizations.append(self.headers["Authorization"])
                route = owner.routes.get(path)
                if callable(route):
                    self.close_connection = True  # it answered as it liked: never read another request
                    route(self)
                    return
                body = route if isinstance(route, bytes) else b"not found"
                self.send_response(200 if isinstance(route, bytes) else 404)
                self.send_header("Content-Type", "text/html" if path.endswith("/") else "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = False  # server_close() joins the request threads

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def serve_index(self, wheels: list[Path], prefix: str = "/simple") -> str:
        """PEP 503 pages for WHEELS (one project each, named by the wheel's file name); the index URL."""
        for wheel in wheels:
            project = wheel.name.split("-")[0].replace("_", "-").lower()
            self.routes[f"/files/{wheel.name}"] = wheel.read_bytes()
            self.routes[f"{prefix}/{project}/"] = (
                f'<html><body><a href="/files/{wheel.name}">{wheel.name}</a></body></html>\n'.encode())
        return self.url + prefix


def serve_bundle(server: LoopbackServer, repo: str, directory: Path, tag: str = "1") -> str:
    """Serve the artifact of the bundle in DIRECTORY from SERVER as an OCI registry would (GET only);
    the digest-pinned reference. The routes can then be changed to misbehave."""
    from modelops.bundles import artifact

    return serve_artifact(server, repo, artifact.build(directory), tag)


def serve_artifact(server: LoopbackServer, repo: str, built, tag: str = "1") -> str:
    """Serve an Artifact (bundles/artifact.py; possibly made by hand, with any layer bytes) from SERVER;
    the digest-pinned reference."""
    from modelops.bundles.digest import sha256_digest
    from modelops.bundles.oci import manifest_for

    manifest = manifest_for(built)
    digest = sha256_digest(manifest)
    server.routes["/v2/"] = b"{}"
    for target in (tag, digest):
        server.routes[f"/v2/{repo}/manifests/{target}"] = manifest
    server.routes[f"/v2/{repo}/blobs/{built.config_digest}"] = built.config_bytes
    server.routes[f"/v2/{repo}/blobs/{built.layer_digest}"] = built.layer_bytes
    return f"{server.host}/{repo}@{digest}"


def make_tls_dir(directory: Path) -> dict[str, Path]:
    """Certificates for a TLS test cluster, made by the test: `directory/release` holds ca.crt, tls.crt and
    tls.key as the chart mounts them (one CA, one certificate signed by it); beside it a foreign CA and a
    certificate it signed (what an outsider has)."""
    from modelops.tls import make_ca, make_signed_cert, mount_dir

    ca = make_ca(directory, "release")
    leaf = make_signed_cert(directory, "release-leaf", ca)
    foreign_ca = make_ca(directory, "foreign")
    foreign = make_signed_cert(directory, "foreign-leaf", foreign_ca)
    mounted = mount_dir(directory / "release", ca[0], leaf)
    return {"dir": mounted, "ca": mounted / "ca.crt", "cert": mounted / "tls.crt", "key": mounted / "tls.key",
            "ca_key": ca[1], "foreign_ca": foreign_ca[0], "foreign_cert": foreign[0], "foreign_key": foreign[1]}


def sleepy_study_in_background(service, n_tasks: int, seconds: float, **run_options):
    """Start `service.run` of `n_tasks` tasks of the `faulty` bundle, each sleeping `seconds`, on a thread;
    (address of the worker of group `victim`, the started thread, a dict that gets the results at `results`)."""
    import threading

    from modelops.study import Study

    victim = next(a for a, i in service.worker_runtime().items() if i["worker_group"] == "victim")
    bundle = service.resolve_bundle("faulty")
    study = Study(name="sleepy", bundle="faulty",
                  parameters=[{"fault": "sleep", "seconds": seconds, "i": i} for i in range(n_tasks)])
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(results=service.run(
        study.tasks(bundle["digest"], bundle["entrypoint"]), **run_options)))
    runner.start()
    return victim, runner, out


def start_victim(cluster_factory, tmp_path, **env):
    """Two 2-thread workers (env: `cluster_factory`'s), the second of group `victim` with its own TMPDIR, so
    `mops_drain(victim_tmp)` finds it alone; (cluster, the victim's process, victim_tmp)."""
    cluster = cluster_factory(n_workers=1, nthreads=2, TMPDIR=str(tmp_path / "other-tmp"), **env)
    victim_tmp = tmp_path / "victim-tmp"
    for d in (tmp_path / "other-tmp", victim_tmp):
        d.mkdir()
    victim_proc = cluster.start_worker(env={"MODELOPS_WORKER_GROUP": "victim", "TMPDIR": str(victim_tmp)})
    cluster.wait_for_workers(2)
    return cluster, victim_proc, victim_tmp


def executing(client, address: str) -> int:
    """How many tasks the worker at `address` runs right now."""
    return client.run(lambda dask_worker: len(dask_worker.state.executing), workers=[address])[address]


def mops_drain(tmp: os.PathLike, timeout: float = 60) -> subprocess.CompletedProcess:
    """`mops drain` as a pod's preStop hook runs it, finding the worker processes whose TMPDIR is `tmp`."""
    import sys

    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-m", "modelops.cli.main", "drain", "--timeout", str(timeout)],
                          env=env, capture_output=True, text=True, timeout=timeout + 30)
