"""Talking to a real Kubernetes cluster from the tests: kubectl, helm 3 and 4, releases, pod logs,
port-forwards and client Jobs. Any cluster given by a `.cluster/env` file works: the local one of
`make cluster-up`, or kind with a registry (`cluster/kind-up.sh`, used by the GitHub workflow).

The chart is always installed from the OCI registry named in that file, with the image pushed
there (by digest): what a platform team does, with no local-image shortcut.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "values"
MOPS = REPO / ".venv" / "bin" / "mops"
HELMS = {"helm4": REPO / ".tools" / "bin" / "helm", "helm3": REPO / ".tools" / "bin" / "helm3"}
WORKER = "app.kubernetes.io/component=worker"
SCHEDULER = "app.kubernetes.io/component=scheduler"
GROUP_LABEL = "modelops-dask.io/worker-group"
# The labels of client pods the chart's NetworkPolicies admit (values: networkPolicy.clientPodLabels).
CLIENT_LABELS = {"modelops-dask/client": "true"}
# "Child process PID 52811 running task sim-1f0c..." (see ../shared/DESIGN.md, required log lines)
CHILD_PID_LINE = re.compile(r"Child process PID (\d+) running task (\S+)")
# Prints "=== URL STATUS" and the body of every URL given: run in a client Job by Release.fetch_pages.
FETCH_PAGES = """python -c '
import sys, urllib.request
for url in sys.argv[1:]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        print("=== %s %d" % (url, reply.status))
        print(reply.read().decode(errors="replace"))
'"""


class CommandFailed(AssertionError):
    pass


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 300, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, input=stdin)
    if check and proc.returncode != 0:
        raise CommandFailed(f"$ {shlex.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@dataclass(frozen=True)
class Target:
    """A cluster and the registry holding this clone's image and chart (from `.cluster/env`)."""

    kubeconfig: str
    kubectl_bin: str
    registry: str
    image_repository: str
    image_digest: str
    chart: str
    chart_version: str
    # The same registry as pods reach it (REGISTRY_BRIDGE: the local cluster's registry on the pod
    # bridge, for workers pulling OCI bundles); "" when the cluster's env file names none.
    registry_bridge: str = ""
    # The object store of the cluster tier (cluster/objectstore.sh), as pods and this machine reach it: ""
    # where the env file names none (kind). Its credentials file holds AWS_ACCESS_KEY_ID=... lines.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_credentials_file: str = ""

    @classmethod
    def from_env_file(cls, path: Path) -> Target:
        env = {}
        for line in path.read_text().splitlines():
            m = re.match(r"^export (\w+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
        missing = [k for k in ("KUBECONFIG", "KUBECTL", "REGISTRY", "IMAGE_REPOSITORY", "IMAGE_DIGEST", "CHART",
                               "CHART_VERSION") if not env.get(k)]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)} (written by make cluster-up)")
        return cls(env["KUBECONFIG"], env["KUBECTL"], env["REGISTRY"], env["IMAGE_REPOSITORY"], env["IMAGE_DIGEST"],
                   env["CHART"], env["CHART_VERSION"], env.get("REGISTRY_BRIDGE", ""), env.get("S3_ENDPOINT", ""),
                   env.get("S3_BUCKET", ""), env.get("S3_CREDENTIALS_FILE", ""))

    def s3_credentials(self) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY of the cluster's object store."""
        pairs = (line.split("=", 1) for line in Path(self.s3_credentials_file).read_text().splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    @property
    def env(self) -> dict:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    @property
    def image(self) -> str:
        return f"{self.image_repository}@{self.image_digest}"

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None) -> str:
        return run([self.kubectl_bin, *args], env=self.env, timeout=timeout, check=check, stdin=stdin).stdout

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def reachable(self) -> str | None:
        """None when the API server answers and a node is Ready, else why not."""
        try:
            proc = run([self.kubectl_bin, "get", "--raw", "/readyz"], env=self.env, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"kubectl failed: {exc}"
        if proc.returncode != 0:
            return f"the API server does not answer: {proc.stderr.strip()[-300:]}"
        nodes = self.kubectl_json("get", "nodes")["items"]
        ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in n["status"].get("conditions", []))]
        return None if ready else "no node is Ready"


class Release:
    """One helm release in its own namespace, driven by helm 3 or helm 4."""

    def __init__(self, target: Target, helm: str, name: str, namespace: str):
        self.target, self.helm_name, self.name, self.namespace = target, helm, name, namespace
        self.helm_bin = str(HELMS[helm])

    # --- helm ---------------------------------------------------------------------------------------
    def helm(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.helm_bin, *args, "--namespace", self.namespace], env=self.target.env, timeout=timeout,
                   check=check)

    def chart_args(self, values: list[str], sets: list[str] = ()) -> list[str]:
        """The chart from the registry, the pushed image by digest, values files in order, --set last."""
        args = [self.target.chart, "--version", self.target.chart_version, "--plain-http"]
        for v in values:
            args += ["-f", str(VALUES / v)]
        args += ["--set", f"image.repository={self.target.image_repository}",
                 "--set", f"image.digest={self.target.image_digest}"]
        for s in sets:
            args += ["--set", s]
        return args

    def install(self, values: list[str], sets: list[str] = (), timeout: str = "5m") -> None:
        self.helm("install", self.name, *self.chart_args(values, sets), "--create-namespace",
                  "--wait", "--timeout", timeout)

    def upgrade(self, values: list[str], sets: list[str] = (), timeout: str = "5m",
                check: bool = True) -> subprocess.CompletedProcess:
        return self.helm("upgrade", self.name, *self.chart_args(values, sets), "--wait", "--timeout", timeout,
                         check=check)

    def history(self) -> list[dict]:
        return json.loads(self.helm("history", self.name, "-o", "json").stdout)

    def helm_test(self, timeout: str = "5m") -> subprocess.CompletedProcess:
        return self.helm("test", self.name, "--timeout", timeout)

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--wait", "--timeout", "3m", check=False)

    # --- kubectl in the release's namespace ----------------------------------------------------------
    def kubectl(self, *args: str, **kw) -> str:
        return self.target.kubectl("--namespace", self.namespace, *args, **kw)

    def items(self, kind: str, selector: str = "") -> list[dict]:
        sel = f"app.kubernetes.io/instance={self.name}" + (f",{selector}" if selector else "")
        return self.target.kubectl_json("--namespace", self.namespace, "get", kind, "-l", sel)["items"]

    def pods(self, selector: str = WORKER, running: bool = True) -> list[dict]:
        pods = self.items("pods", selector)
        if running:
            pods = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return pods

    def logs(self, pod: str, container: str | None = None) -> str:
        args = ["logs", pod, "--tail=-1"] + (["-c", container] if container else [])
        return self.kubectl(*args)

    def wait_rollout(self, timeout: int = 300) -> None:
        for d in self.items("deployments"):
            self.kubectl("rollout", "status", f"deployment/{d['metadata']['name']}", f"--timeout={timeout}s",
                         timeout=timeout + 30)

    def scheduler_service(self) -> tuple[str, int]:
        svc = self.items("services", SCHEDULER)[0]
        port = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == "comm")
        return svc["metadata"]["name"], port

    def worker_logs_by_ip(self) -> dict[str, tuple[str, str]]:
        """Pod IP -> (pod name, its whole log), for every running worker pod."""
        return {p["status"]["podIP"]: (p["metadata"]["name"], self.logs(p["metadata"]["name"])) for p in self.pods()}

    def wait_for_log(self, pod: str, text: str, timeout: float = 120, container: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.logs(pod, container)
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{pod} did not log {text!r} within {timeout}s; its log:\n{log[-3000:]}")
            time.sleep(2)

    # --- clients ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def port_forward(self) -> Iterator[str]:
        """`kubectl port-forward` to the scheduler's comm port; yields tcp://127.0.0.1:PORT."""
        svc, port = self.scheduler_service()
        proc = subprocess.Popen([self.target.kubectl_bin, "--namespace", self.namespace, "port-forward",
                                 "--address", "127.0.0.1", f"service/{svc}", f":{port}"],
                                env=self.target.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not m:
                raise AssertionError(f"port-forward did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}")
            yield f"tcp://127.0.0.1:{m.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def run_client_job(self, script: str, timeout: float = 600) -> str:
        """Runs a shell script (`mops run ...`; @SCHEDULER@ is the scheduler's in-cluster address) in a
        Job from the release's image inside the namespace, as a batch client would; returns the pod's
        output. The Job is deleted afterwards."""
        name = f"client-{uuid.uuid4().hex[:6]}"
        svc, port = self.scheduler_service()
        script = script.replace("@SCHEDULER@", f"tcp://{svc}:{port}")
        job = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"modelops-dask/e2e": "client"}},
            "spec": {
                "backoffLimit": 0, "ttlSecondsAfterFinished": 600,
                "template": {
                    "metadata": {"labels": {**CLIENT_LABELS, "modelops-dask/e2e": "client"}},
                    "spec": {
                        "restartPolicy": "Never", "automountServiceAccountToken": False,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "client", "image": self.target.image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", script],
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(job))
        try:
            deadline = time.monotonic() + timeout
            while True:
                status = self.target.kubectl_json("--namespace", self.namespace, "get", "job", name)["status"]
                if status.get("succeeded") or status.get("failed"):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"client job {name} did not finish within {timeout}s")
                time.sleep(2)
            out = self.kubectl("logs", f"job/{name}", "--tail=-1")
            if status.get("failed"):
                raise AssertionError(f"client job {name} failed:\n{out[-4000:]}")
            return out
        finally:
            self.kubectl("delete", "job", name, "--wait=false", "--cascade=background", check=False)

    def fetch_pages(self, urls: list[str], before: str = "") -> dict[str, str]:
        """URL -> body of every URL that answered 200, fetched from a client Job inside the namespace
        (pod IPs and in-cluster names are reachable only from there); `before` runs first (a study)."""
        out = self.run_client_job(f"{before}{FETCH_PAGES} {' '.join(urls)}")
        parts = re.split(r"^=== (\S+) 200$", out, flags=re.M)
        got = dict(zip(parts[1::2], parts[2::2]))
        assert set(got) == set(urls), out[-3000:]
        return got

    def diagnostics(self) -> str:
        """Events, pods and every container's log of the namespace: printed when a test fails."""
        parts = []
        for args in (["get", "events", "--sort-by=.lastTimestamp"], ["get", "all,pdb,networkpolicy", "-o", "wide"],
                     ["describe", "pods"]):
            proc = run([self.target.kubectl_bin, "--namespace", self.namespace, *args], env=self.target.env,
                       check=False, timeout=60)
            parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout[-8000:]}{proc.stderr[-2000:]}")
        for pod in self.items("pods"):
            name = pod["metadata"]["name"]
            proc = run([self.target.kubectl_bin, "--namespace", self.namespace, "logs", name, "--all-containers",
                        "--tail=200"], env=self.target.env, check=False, timeout=60)
            parts.append(f"--- logs of {name}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)


def check_fresh_process_per_task(rel: Release, results: list[dict], n_tasks: int) -> None:
    """Provenance says cold (fork) with a distinct (worker, PID) per task, and each task's own pod
    logged `Child process PID <pid> running task <id>` for it, with no (pod, PID) ever repeated."""
    assert len(results) == n_tasks and all(r["status"] == "ok" for r in results), results[:2]
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    assert {r["provenance"]["cold_start"] for r in results} == {"fork"}
    pairs = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pairs)) == len(pairs), Counter(pairs).most_common(3)

    logs = rel.worker_logs_by_ip()
    logged: dict = {}  # (pod, pid) -> task ids it ran
    for pod, log in logs.values():
        for pid, task in CHILD_PID_LINE.findall(log):
            logged.setdefault((pod, int(pid)), []).append(task)
    repeated = {k: v for k, v in logged.items() if len(v) > 1}
    assert not repeated, f"a cold child ran more than one task: {repeated}"
    for r in results:
        ip = r["provenance"]["worker"].split("://", 1)[-1].rsplit(":", 1)[0]  # tcp:// or tls://
        pod, _ = logs[ip]
        assert logged.get((pod, r["provenance"]["pid"])) == [r["task_id"]], (pod, r["provenance"]["pid"])


def load_results(text: str) -> list[dict]:
    """Result JSON lines out of a file or a pod's output (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"task_id"' in line:
            out.append(json.loads(line))
    return out


def run_study_through_port_forward(release: Release, study: Path, output: Path, timeout: float = 600) -> list[dict]:
    """`mops run STUDY --scheduler` from this machine, through `kubectl port-forward`."""
    with release.port_forward() as address:
        proc = run([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output)], timeout=timeout,
                   check=False)
    assert proc.returncode == 0, f"mops run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return load_results(output.read_text())


def wait_until_gone(release: Release, kinds: str = "pods,jobs,pvc", timeout: float = 120) -> list[str]:
    """Polls the release's namespace until none of these objects is left; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = release.kubectl("get", kinds, "-o", "name").split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(2)


def executor_of(values_files: list[str]) -> dict[str, dict]:
    """What each worker group of these values files must run: {group: {"type", "coldStart"}}, from the
    files themselves (groups inherit worker.executor and override it), chart defaults otherwise."""
    merged: dict = {}
    for v in values_files:
        data = yaml.safe_load((VALUES / v).read_text()) or {}
        worker = data.get("worker", {})
        merged.setdefault("default", {}).update(worker.get("executor", {}))
        for name, group in (worker.get("groups") or {}).items():
            merged.setdefault(name, {}).update((group or {}).get("executor", {}))
    base = {"type": "isolated_warm", "coldStart": "fork", **merged.get("default", {})}
    return {name: {**base, **(overrides if name != "default" else {})} for name, overrides in merged.items()}


def restricted_pod(name: str, image: str, script: str, volumes: list[dict] = (), mounts: list[dict] = (),
                   env: dict | None = None, labels: dict | None = None) -> dict:
    """A pod as the project's pods run, admitted under the `restricted` Pod Security Standard: UID 10001,
    fsGroup 10001, read-only root, no capabilities, RuntimeDefault seccomp."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script],
                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": list(mounts),
            }],
            "volumes": list(volumes),
        },
    }


def run_pod(ns: Release, pod: dict, timeout: float = 120) -> str:
    """Applies a pod that runs to completion; returns its log, or fails with it."""
    name = pod["metadata"]["name"]
    ns.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    deadline = time.monotonic() + timeout
    while (phase := ns.target.kubectl_json("--namespace", ns.namespace, "get", "pod", name)["status"].get("phase")) \
            not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"pod {name} still {phase} after {timeout}s"
        time.sleep(1)
    log = ns.kubectl("logs", name, "--tail=-1")
    assert phase == "Succeeded", f"pod {name} failed:\n{log[-3000:]}"
    return log
