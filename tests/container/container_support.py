"""Run the chart's rendered pod specs as containers of the real image on the local Docker engine.

A Kubernetes container spec becomes one ``docker run``: command/args (with Kubernetes' ``$(VAR)``
expansion), env (fieldRefs filled in as a kubelet would for a pod on this host), user and group,
read-only root filesystem, dropped capabilities, no-new-privileges, working dir, and a tmpfs for every
``emptyDir`` mount. Networking is ``--network host`` and the scheduler Service's DNS names resolve to
127.0.0.1 (``--add-host``), so all traffic stays on the loopback interface.
Anything in a spec this translation does not know is an error, never silently dropped.
"""

from __future__ import annotations

import contextlib

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelops-dask"
VALUES = REPO / "values"
HELM = REPO / ".tools" / "bin" / "helm"
RELEASE = "mops"
NAMESPACE = "modelops"
LABEL = "org.modelops.test=container"
# The pytest process that started a container: leftovers of dead sessions are removed, never the
# containers of another session that is still running.
SESSION_LABEL = f"org.modelops.test.pid={os.getpid()}"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Missing prerequisite: a failure under CI (CI=true), a skip with the reason elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: container tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def docker(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


# ---- chart rendering --------------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    import socket

    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))  # all interfaces, as the scheduler binds
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# Host networking: the chart's fixed ports (8786/8787/8788) could be taken on a developer's machine,
# so every rendering in this session uses the same three free ports instead.
COMM_PORT, DASHBOARD_PORT, WORKER_HEALTH_PORT = _free_ports(3)
PORT_SETS = (
    f"scheduler.ports.comm={COMM_PORT}",
    f"scheduler.ports.dashboard={DASHBOARD_PORT}",
    f"worker.healthPort={WORKER_HEALTH_PORT}",
)


def render(values_files: Sequence[str | Path] = (), sets: Sequence[str] = (), *, ports: bool = True) -> list[dict]:
    """``helm template`` the chart; return the rendered manifests (documents that are not empty)."""
    cmd = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for f in values_files:
        cmd += ["-f", str(f)]
    for s in [*(PORT_SETS if ports else ()), *sets]:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed: {' '.join(cmd)}\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def component(doc: dict) -> str | None:
    return (doc.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component")


def workloads(manifests: Iterable[dict], comp: str) -> list[dict]:
    return [
        d for d in manifests
        if d.get("kind") in {"Deployment", "StatefulSet"} and component(d) == comp
    ]


def pod_template(workload: dict) -> dict:
    return workload["spec"]["template"]


def helm_test_pods(manifests: Iterable[dict]) -> list[dict]:
    return [
        d for d in manifests
        if d.get("kind") == "Pod"
        and "test" in (d["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(",")
    ]


def scheduler_service_names(manifests: Iterable[dict]) -> list[str]:
    """Every DNS name a pod may use for the scheduler Service."""
    names = []
    for d in manifests:
        if d.get("kind") == "Service" and component(d) == "scheduler":
            name = d["metadata"]["name"]
            ns = d["metadata"].get("namespace", NAMESPACE)
            names += [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    return names


def configmaps(manifests: Iterable[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests if d.get("kind") == "ConfigMap"}


def secrets(manifests: Iterable[dict]) -> dict[str, dict[str, str]]:
    """Rendered Secrets as {name: {key: decoded value}} (stringData wins, as in the API server)."""
    import base64

    out: dict[str, dict[str, str]] = {}
    for d in manifests:
        if d.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
            data.update({k: str(v) for k, v in (d.get("stringData") or {}).items()})
            out[d["metadata"]["name"]] = data
    return out


def container_env(pod: dict, name: str | None = None) -> dict[str, str]:
    spec = main_container(pod, name)
    return {e["name"]: e.get("value", "") for e in spec.get("env", []) if "value" in e}


def main_container(pod: dict, name: str | None = None) -> dict:
    containers = pod["spec"]["containers"]
    if name is None:
        assert len(containers) == 1, f"expected one container, got {[c['name'] for c in containers]}"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


# ---- pod spec -> docker run -------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args/env: undefined references stay as written."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


@dataclass
class PodIdentity:
    name: str
    namespace: str = NAMESPACE
    ip: str = "127.0.0.1"
    node: str = "container-test-node"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))


def _field_ref(path: str, pod: dict, ident: PodIdentity) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": ident.name,
        "metadata.namespace": ident.namespace,
        "metadata.uid": ident.uid,
        "spec.nodeName": ident.node,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": ident.ip,
        "status.hostIP": ident.ip,
        "status.podIPs": ident.ip,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise AssertionError(f"fieldRef {path!r} is not emulated by the container tests")


def _resource_ref(ref: dict, container: dict) -> str:
    resource = ref["resource"]
    kind, _, what = resource.partition(".")
    value = str((container.get("resources", {}).get(kind) or {}).get(what, ""))
    if not value:
        raise AssertionError(f"resourceFieldRef {resource} has no value in the container spec")
    divisor = str(ref.get("divisor", "1"))
    if what == "cpu":
        cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
        div = float(divisor[:-1]) / 1000 if divisor.endswith("m") else float(divisor)
        return str(max(1, int(-(-cores // div))))
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}

    def qty(q: str) -> int:
        for suffix, mult in units.items():
            if q.endswith(suffix):
                return int(float(q[: -len(suffix)]) * mult)
        return int(float(q))

    return str(-(-qty(value) // qty(divisor)))


def resolve_env(pod: dict, container: dict, ident: PodIdentity, manifests: Sequence[dict]) -> dict[str, str]:
    cms = configmaps(manifests)
    secs = secrets(manifests)
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            data = cms[src["configMapRef"]["name"]].get("data", {})
            env.update({src.get("prefix", "") + k: v for k, v in data.items()})
        elif "secretRef" in src:
            data = secs[src["secretRef"]["name"]]
            env.update({src.get("prefix", "") + k: v for k, v in data.items()})
        else:
            raise AssertionError(f"envFrom {src} is not emulated by the container tests")
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
        elif "valueFrom" in item:
            vf = item["valueFrom"]
            if "fieldRef" in vf:
                env[name] = _field_ref(vf["fieldRef"]["fieldPath"], pod, ident)
            elif "resourceFieldRef" in vf:
                env[name] = _resource_ref(vf["resourceFieldRef"], container)
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                env[name] = cms[ref["name"]]["data"][ref["key"]]
            elif "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                env[name] = secs[ref["name"]][ref["key"]]
            else:
                raise AssertionError(f"env {name}: valueFrom {vf} is not emulated")
        else:
            env[name] = ""
    return env


def _docker_quantity(q: str) -> str:
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G) as bytes for docker --memory."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return str(int(float(q[: -len(suffix)]) * mult))
    return str(int(float(q)))


@dataclass
class RunSpec:
    """One container of a rendered pod, ready to start with ``docker run``."""

    pod: dict
    container: dict
    name: str
    image: str
    env: dict[str, str]
    argv: list[str]  # docker run arguments after the image
    options: list[str]

    def docker_run_args(self) -> list[str]:
        return ["run", "-d", "--name", self.name, "--label", LABEL, "--label", SESSION_LABEL,
                *self.options, self.image, *self.argv]


def build_run_spec(
    pod: dict,
    image: str,
    manifests: Sequence[dict],
    *,
    container_name: str | None = None,
    env_override: dict[str, str] | None = None,
    name_prefix: str = "mops-ct",
) -> RunSpec:
    container = main_container(pod, container_name)
    pod_spec = pod["spec"]
    meta = pod.get("metadata") or {}
    base = meta.get("name") or f"{RELEASE}-{component(pod) or container['name']}"
    ident = PodIdentity(name=f"{base}-{uuid.uuid4().hex[:5]}")
    env = resolve_env(pod, container, ident, manifests)
    if env_override:
        env.update(env_override)

    options: list[str] = ["--network", "host", "--hostname", ident.name[:63]]
    for host in scheduler_service_names(manifests):
        options += ["--add-host", f"{host}:127.0.0.1"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]

    # Security contexts: the container's fields win over the pod's.
    psc = pod_spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    if uid is not None:
        options += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root and uid is None:
        raise AssertionError("runAsNonRoot without runAsUser: the kubelet would need the image's numeric USER")
    if non_root and uid == 0:
        raise AssertionError("runAsNonRoot with runAsUser 0")
    for g in psc.get("supplementalGroups", []) + ([psc["fsGroup"]] if "fsGroup" in psc else []):
        options += ["--group-add", str(g)]
    if csc.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if csc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if csc.get("privileged"):
        raise AssertionError("privileged container in the chart")
    caps = csc.get("capabilities") or {}
    for cap in caps.get("drop", []):
        options += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        options += ["--cap-add", cap]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        options += ["--memory", _docker_quantity(str(limits["memory"]))]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        options += ["--cpus", str(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    if "workingDir" in container:
        options += ["--workdir", container["workingDir"]]

    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    cms = configmaps(manifests)
    for mount in container.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in vol:
            opts = "rw,exec,mode=1777"
            size = (vol["emptyDir"] or {}).get("sizeLimit")
            if size:
                opts += f",size={str(size).replace('i', '').lower()}"
            options += ["--tmpfs", f"{path}:{opts}"]
        elif "configMap" in vol:
            data = cms[vol["configMap"]["name"]].get("data", {})
            tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"mops-ct-cm-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            for key, value in data.items():
                (tmp / key).write_text(value)
                (tmp / key).chmod(0o644)
            tmp.chmod(0o755)
            src = tmp / mount["subPath"] if "subPath" in mount else tmp
            options += ["--volume", f"{src}:{path}:ro"]
        else:
            raise AssertionError(f"volume {vol} is not emulated by the container tests")

    command = [expand(a, env) for a in container.get("command", [])]
    args = [expand(a, env) for a in container.get("args", [])]
    argv: list[str] = []
    if command:
        options += ["--entrypoint", command[0]]
        argv = [*command[1:], *args]
    else:
        argv = args
    name = f"{name_prefix}-{container['name']}-{uuid.uuid4().hex[:6]}"
    return RunSpec(pod, container, name, image, env, argv, options)


# ---- running containers ------------------------------------------------------------------------------

def remove_leftovers() -> None:
    """Remove test containers whose pytest process is gone (an interrupted earlier run)."""
    rows = docker("ps", "-a", "--filter", f"label={LABEL}",
                  "--format", '{{.ID}} {{.Label "org.modelops.test.pid"}}').stdout.splitlines()
    stale = []
    for row in rows:
        cid, _, pid = row.partition(" ")
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            stale.append(cid)
        except PermissionError:
            pass
    if stale:
        docker("rm", "-f", *stale, check=False)


class Containers:
    """Starts containers from RunSpecs; removes every one of them at the end (and dumps logs on failure)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def start(self, spec: RunSpec) -> str:
        docker(*spec.docker_run_args())
        self.names.append(spec.name)
        return spec.name

    def logs(self, name: str) -> str:
        proc = docker("logs", name, check=False)
        return proc.stdout + proc.stderr

    def state(self, name: str) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)

    def wait_exit(self, name: str, timeout: float) -> int:
        try:
            proc = docker("wait", name, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} did not exit within {timeout}s; logs of all containers:\n{self.dump()}"
            ) from None
        return int(proc.stdout.strip())

    def wait_log(self, name: str, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logs(name)
            if re.search(pattern, text):
                return text
            if not self.state(name)["Running"]:
                raise AssertionError(f"{name} exited before logging {pattern!r}:\n{text[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"{name} did not log {pattern!r} in {timeout}s:\n{self.logs(name)[-4000:]}")

    def remove(self, name: str) -> None:
        docker("rm", "-f", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def remove_all(self) -> None:
        for name in list(self.names):
            self.remove(name)

    def dump(self) -> str:
        return "\n".join(f"===== {n} =====\n{self.logs(n)[-6000:]}" for n in self.names)


def wait_http_probe(run: RunSpec, containers: Containers, kind: str = "readinessProbe", timeout: float = 90) -> None:
    """Poll the container's httpGet probe on 127.0.0.1 (host networking) until it answers 2xx/3xx."""
    probe = run.container.get(kind)
    assert probe and "httpGet" in probe, f"{run.container['name']} has no httpGet {kind}"
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in run.container.get("ports", []) if p.get("name") == port)
    url = f"http://127.0.0.1:{port}{probe['httpGet'].get('path', '/')}"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not containers.state(run.name)["Running"]:
            raise AssertionError(f"{run.name} exited while waiting for {url}:\n{containers.logs(run.name)[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 400:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{kind} {url} of {run.name} never succeeded ({last}):\n{containers.logs(run.name)[-4000:]}")


def port_of(container: dict, name: str) -> int:
    for p in container.get("ports", []):
        if p.get("name") == name:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {name}")


def host_tool(name: str) -> str:
    path = shutil.which(name, path=str(REPO / ".venv" / "bin")) or shutil.which(name)
    if not path:
        unavailable(f"{name} is not installed (make venv)")
    return path


# ---- a cluster made of the rendered pods --------------------------------------------------------------

STUDY = REPO / "examples" / "sir" / "study.json"
_ADDRESS = re.compile(r"tcp://([A-Za-z0-9_.-]+):(\d+)")


@dataclass
class Cluster:
    manifests: list[dict]
    scheduler: RunSpec
    workers: list[RunSpec]
    address: str  # the scheduler, as the host reaches it (127.0.0.1)
    containers: Containers

    def worker_logs(self) -> str:
        return "\n".join(self.containers.logs(w.name) for w in self.workers)


def scheduler_address(manifests: Sequence[dict], worker: RunSpec) -> str:
    """The address the rendered worker dials, with the Service name replaced by 127.0.0.1."""
    names = set(scheduler_service_names(manifests))
    for text in [*worker.argv, *worker.env.values()]:
        m = _ADDRESS.search(text)
        if m and m.group(1) in names:
            return f"tcp://127.0.0.1:{m.group(2)}"
    raise AssertionError(f"the worker spec names no scheduler Service address: {worker.argv}")


def start_workers(manifests: Sequence[dict], image: str, containers: Containers,
                  env_override: dict[str, str] | None = None) -> list[RunSpec]:
    """One container per worker Deployment (replicas share fixed host ports, so one each)."""
    workers = []
    for deployment in workloads(manifests, "worker"):
        spec = build_run_spec(pod_template(deployment), image, manifests, env_override=env_override)
        containers.start(spec)
        workers.append(spec)
    assert workers, "the rendered chart has no worker Deployment"
    for spec in workers:
        wait_http_probe(spec, containers)
        containers.wait_log(spec.name, r"Executor: \w+")
    return workers


def start_cluster(manifests: list[dict], image: str, containers: Containers) -> Cluster:
    schedulers = workloads(manifests, "scheduler")
    assert len(schedulers) == 1, "expected one scheduler Deployment"
    scheduler = build_run_spec(pod_template(schedulers[0]), image, manifests)
    containers.start(scheduler)
    wait_http_probe(scheduler, containers)
    workers = start_workers(manifests, image, containers)
    return Cluster(manifests, scheduler, workers, scheduler_address(manifests, workers[0]), containers)


def run_study(address: str, output: Path, study: Path = STUDY, timeout: float = 240) -> list[dict]:
    """`mops run` from the host venv against the containers; the results it wrote."""
    proc = subprocess.run(
        [host_tool("mops"), "run", str(study), "--scheduler", address, "--output", str(output)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )
    assert proc.returncode == 0, f"mops run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    results = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    assert results, f"mops run wrote no results:\n{proc.stdout}"
    return results


def study_size(study: Path = STUDY) -> int:
    data = json.loads(study.read_text())
    return len(data["parameters"]) * int(data.get("replicates", 1))


def child_pids(logs: str) -> list[int]:
    return [int(p) for p in re.findall(r"Child process PID (\d+)", logs)]


def run_to_exit(spec: RunSpec, containers: Containers, timeout: float = 180) -> tuple[int, str]:
    containers.start(spec)
    code = containers.wait_exit(spec.name, timeout)
    return code, containers.logs(spec.name)


@contextlib.contextmanager
def running_cluster(values_files: Sequence[str | Path], image: str):
    """The chart's scheduler and workers running as containers; logs printed if the block fails."""
    containers = Containers()
    try:
        yield start_cluster(render(values_files), image, containers)
    except BaseException:
        print(containers.dump())
        raise
    finally:
        containers.remove_all()
