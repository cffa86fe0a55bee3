"""helm install into a kind cluster, a study through a port-forward, helm test, helm upgrade.

Skipped with the reason where Docker, kind, kubectl or the kind node image are missing (see
images/worker/README.md for how to run them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from kind_support import CHART, HELM, REPO, VALUES

pytestmark = pytest.mark.kind

RELEASE = "mops"
NAMESPACE = "modelops"
STUDY = REPO / "examples" / "sir" / "study.json"
WORKER_SELECTOR = "app.kubernetes.io/component=worker"


def _env(cluster) -> dict:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}


def helm(cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=timeout, env=_env(cluster))
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl(cluster, *args: str) -> str:
    return cluster.kubectl("--namespace", NAMESPACE, *args)


def install_args(values: str) -> list[str]:
    """values/kind.yaml (the locally loaded image, small resources) plus the executor's values file."""
    return [
        RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "-f", str(VALUES / "kind.yaml"), "-f", str(VALUES / values),
        "--wait", "--timeout", "5m",
    ]


def worker_pods(cluster) -> set[str]:
    out = kubectl(cluster, "get", "pods", "-l", WORKER_SELECTOR, "-o", "json")
    return {
        p["metadata"]["name"] for p in json.loads(out)["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def worker_logs(cluster, pods: set[str] | None = None) -> str:
    """All worker logs (`kubectl logs -l ... --tail=-1`), or only those of the given pods."""
    if pods is None:
        return kubectl(cluster, "logs", "-l", WORKER_SELECTOR, "--tail=-1", "--prefix", "--max-log-requests=20")
    return "\n".join(
        "\n".join(f"[{pod}] {line}" for line in kubectl(cluster, "logs", f"pod/{pod}", "--tail=-1").splitlines())
        for pod in sorted(pods)
    )


def rollout(cluster) -> None:
    for name in kubectl(cluster, "get", "deploy", "-l", WORKER_SELECTOR, "-o", "name").split():
        kubectl(cluster, "rollout", "status", name, "--timeout=300s")


def run_study(cluster, output: Path) -> list[dict]:
    service = json.loads(kubectl(cluster, "get", "svc", "-l", "app.kubernetes.io/component=scheduler", "-o", "json"))
    svc = service["items"][0]
    comm = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == "comm")
    with cluster.port_forward(f"service/{svc['metadata']['name']}", comm, "--namespace", NAMESPACE) as port:
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "mops"), "run", str(STUDY),
             "--scheduler", f"tcp://127.0.0.1:{port}", "--output", str(output)],
            capture_output=True, text=True, timeout=600,
        )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return [json.loads(line) for line in output.read_text().splitlines() if line.strip()]


def dump(cluster) -> str:
    parts = []
    for args in (("get", "events", "--sort-by=.lastTimestamp"), ("get", "pods", "-o", "wide"),
                 ("describe", "pods"), ("logs", "-l", "app.kubernetes.io/name=modelops-dask",
                                        "--tail=-1", "--prefix", "--all-containers", "--max-log-requests=20")):
        try:
            parts.append(f"$ kubectl {' '.join(args)}\n" + kubectl(cluster, *args))
        except subprocess.CalledProcessError as exc:
            parts.append(f"$ kubectl {' '.join(args)} failed: {exc}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def release(cluster):
    try:
        helm(cluster, "install", *install_args("cold.yaml"))
        rollout(cluster)
        yield cluster
    except BaseException:
        print(dump(cluster))
        raise
    finally:
        subprocess.run([str(HELM), "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"],
                       env=_env(cluster), capture_output=True, timeout=300)


@pytest.fixture
def on_failure_dump(release, request):
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(dump(release))


def test_cold_install_runs_every_task_in_a_fresh_process(release, on_failure_dump, tmp_path):
    results = run_study(release, tmp_path / "cold.jsonl")
    assert results and all(r["status"] == "ok" for r in results)
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    pids = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pids)) == len(pids)
    logs = worker_logs(release)
    assert "Executor: cold" in logs
    logged = re.findall(r"^(\S+) .*Child process PID (\d+)", logs, re.M)
    assert len(logged) >= len(results) and len(set(logged)) == len(logged)


def test_helm_test_passes(release, on_failure_dump):
    proc = helm(release, "test", RELEASE, "--namespace", NAMESPACE, "--logs", "--timeout", "5m")
    assert "Phase:" in proc.stdout and "Failed" not in proc.stdout


def test_upgrade_to_warm_rolls_new_pods_with_new_log_lines(release, on_failure_dump, tmp_path):
    before = worker_pods(release)
    helm(release, "upgrade", *install_args("warm.yaml"))
    rollout(release)
    after = worker_pods(release)
    assert after and not (after & before), f"pods were not replaced: {before} -> {after}"
    logs = worker_logs(release, after)
    assert "Executor: isolated_warm" in logs and "Executor: cold" not in logs
    results = run_study(release, tmp_path / "warm.jsonl")
    assert {r["provenance"]["executor"] for r in results} == {"isolated_warm"}
    pids = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pids)) < len(pids)
    helm(release, "test", RELEASE, "--namespace", NAMESPACE, "--logs", "--timeout", "5m")
