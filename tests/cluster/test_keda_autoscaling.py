"""Issue 22, item 7, on the real cluster with KEDA (installed by `make cluster-up`): a worker group that scales
from and to zero on the scheduler's own demand. The release has a `cold` group with autoscaling (min 0, max 2)
beside the untouched default group; the chart's NetworkPolicies are on, with KEDA's namespace admitted to the
scheduler's dashboard port (networkPolicy.metricsFrom, as docs/operations.md says). A study that requires
group cold starts with no pod of it, waits naming the group, KEDA scales the group up, the study completes
with a fresh (pod, PID) per task, and after the cooldown the group is back at zero pods; the default group's
replicas never change."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import pytest
from cluster_support import CHILD_PID_LINE, GROUP_LABEL, MOPS, WORKER, load_results

from tests.helpers import skip_or_fail

GROUP = "cold"
MAX = 2
POLLING_S = 5
COOLDOWN_S = 15
TASKS = 8
TASK_SECONDS = 6
# The node name of the local cluster (cluster/lib.sh: CLUSTER_NODE_NAME), whose `make cluster-up` installs KEDA.
LOCAL_NODE = "modelops-node"
SETS = [
    f"worker.groups.{GROUP}.executor.type=cold",
    f"worker.groups.{GROUP}.nthreads=1",
    f"worker.groups.{GROUP}.autoscaling.enabled=true",
    f"worker.groups.{GROUP}.autoscaling.minReplicas=0",
    f"worker.groups.{GROUP}.autoscaling.maxReplicas={MAX}",
    f"worker.groups.{GROUP}.autoscaling.pollingInterval={POLLING_S}",
    f"worker.groups.{GROUP}.autoscaling.cooldownPeriod={COOLDOWN_S}",
    f"worker.groups.{GROUP}.autoscaling.scaleDown.stabilizationWindowSeconds=0",
    "networkPolicy.enabled=true",
    r"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=keda",
]


def keda_missing(target) -> str | None:
    """None when KEDA's CRD and its external-metrics API (Available) are there, else what is missing."""
    crd = target.kubectl("get", "crd", "scaledobjects.keda.sh", "-o", "name", check=False).strip()
    if not crd:
        return "the cluster has no KEDA (no CRD scaledobjects.keda.sh)"
    api = target.kubectl("get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o",
                         "jsonpath={.status.conditions[?(@.type==\"Available\")].status}", check=False).strip()
    if api != "True":
        return f"KEDA's external-metrics API (APIService v1beta1.external.metrics.k8s.io) is not Available ({api or 'absent'})"
    return None


@pytest.fixture(scope="module")
def release(releases, target):
    reason = keda_missing(target)
    if reason:
        nodes = target.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
        if LOCAL_NODE in nodes:  # `make cluster-up` installs KEDA: its absence there is a failure where required
            skip_or_fail(f"{reason}: `make cluster-up` installs it", required_by="MODELOPS_CLUSTER_REQUIRED")
        pytest.skip(f"{reason}; only the local cluster of `make cluster-up` has it (kind runs have none)")
    rel = releases.new("helm4")
    rel.install(["cold.yaml", "local.yaml"], sets=SETS)
    yield rel
    rel.uninstall()


def deployment(rel, name: str) -> dict:
    return rel.target.kubectl_json("--namespace", rel.namespace, "get", "deployment", name)


def group_pods(rel) -> list[dict]:
    """The cold group's pods, terminating ones too."""
    return rel.items("pods", f"{WORKER},{GROUP_LABEL}={GROUP}")


def ready(pod: dict) -> bool:
    return (pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])))


def scaled_object_ready(rel, name: str) -> bool:
    so = rel.target.kubectl_json("--namespace", rel.namespace, "get", "scaledobject", name)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in so.get("status", {}).get("conditions", []))


def wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


def test_a_group_scales_from_zero_for_a_study_and_back(release, tmp_path):
    rel = release
    cold_name = f"{rel.name}-modelops-dask-worker-{GROUP}"
    default_name = f"{rel.name}-modelops-dask-worker"
    wait("the ScaledObject is Ready", lambda: scaled_object_ready(rel, cold_name), 120)
    print("\n" + rel.kubectl("get", "scaledobject", cold_name).strip())
    # Installed at the Deployment's default of 1 pod (the chart renders no replicas), KEDA takes it to zero.
    wait("the cold group at zero pods",
         lambda: deployment(rel, cold_name)["spec"]["replicas"] == 0 and not group_pods(rel), 180)
    default_before = deployment(rel, default_name)["spec"]["replicas"]
    default_pods = {p["metadata"]["name"] for p in rel.pods(f"{WORKER},{GROUP_LABEL}=default")}
    assert default_before == 1 and len(default_pods) == 1, (default_before, default_pods)

    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "from-zero", "bundle": "sleep", "parameters": [{"seconds": TASK_SECONDS}],
                                 "replicates": TASKS, "base_seed": 7}))
    output = tmp_path / "results.jsonl"
    first_ready = first_result = at_max = None
    most = 0
    logs: dict[str, tuple[str, str]] = {}  # pod name -> (its IP, its latest log)
    default_replicas_seen = set()

    def capture_logs():
        for p in group_pods(rel):
            ip = p["status"].get("podIP")
            if not ip:
                continue
            log = rel.kubectl("logs", p["metadata"]["name"], "--tail=-1", check=False)
            if log:
                logs[p["metadata"]["name"]] = (ip, log)

    with rel.port_forward() as address:
        submitted = time.monotonic()
        run = subprocess.Popen([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output),
                                "--group", GROUP, "--wait-workers", "300", "--chunk-size", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert not group_pods(rel), "a cold pod existed at the submit"
        while run.poll() is None:
            now = time.monotonic()
            pods = group_pods(rel)
            n_ready = sum(ready(p) for p in pods)
            most = max(most, n_ready)
            if n_ready and first_ready is None:
                first_ready = now - submitted
            if n_ready >= MAX and at_max is None:
                at_max = now - submitted
            if first_result is None and output.exists() and output.read_text().strip():
                first_result = now - submitted
            default_replicas_seen.add(deployment(rel, default_name)["spec"]["replicas"])
            if n_ready:
                capture_logs()
            assert now - submitted < 600, "the study did not finish within 600 s"
            time.sleep(1)
        done = time.monotonic() - submitted
        out = run.stdout.read()
    capture_logs()
    assert run.returncode == 0, f"mops run exit {run.returncode}:\n{out[-4000:]}"
    assert f"waiting for workers of group {GROUP}" in out, out[-3000:]

    results = load_results(output.read_text())
    assert len(results) == TASKS and all(r["status"] == "ok" for r in results), results[:2]
    assert {r["provenance"]["executor"] for r in results} == {"cold"}
    pairs = [(r["provenance"]["worker"], r["provenance"]["pid"]) for r in results]
    assert len(set(pairs)) == TASKS, Counter(pairs).most_common(3)
    by_ip = {ip: (pod, log) for pod, (ip, log) in logs.items()}
    logged: dict = {}  # (pod, pid) -> task ids it ran
    for pod, (_, log) in logs.items():
        for pid, task in CHILD_PID_LINE.findall(log):
            logged.setdefault((pod, int(pid)), []).append(task)
    assert not {k: v for k, v in logged.items() if len(v) > 1}, f"a cold child ran more than one task: {logged}"
    for r in results:
        ip = r["provenance"]["worker"].split("://", 1)[-1].rsplit(":", 1)[0]
        assert ip in by_ip, f"task {r['task_id']} ran on {ip}, not a pod of group {GROUP}: {sorted(by_ip)}"
        pod = by_ip[ip][0]
        assert logged.get((pod, r["provenance"]["pid"])) == [r["task_id"]], (pod, r["provenance"]["pid"])
    assert first_ready is not None and first_result is not None
    assert most == MAX, f"the group reached {most} ready pods, not its maxReplicas {MAX}"

    # back to zero after the cooldown
    ended = time.monotonic()
    wait("the cold group back at zero pods",
         lambda: deployment(rel, cold_name)["spec"]["replicas"] == 0 and not group_pods(rel), 300, every=0.5)
    to_zero = time.monotonic() - ended

    default_replicas_seen.add(deployment(rel, default_name)["spec"]["replicas"])
    assert default_replicas_seen == {1}, f"the default group's replicas changed: {default_replicas_seen}"
    assert {p["metadata"]["name"] for p in rel.pods(f"{WORKER},{GROUP_LABEL}=default")} == default_pods
    print(f"\nKEDA, group {GROUP} (min 0, max {MAX}, pollingInterval {POLLING_S} s, cooldownPeriod {COOLDOWN_S} s), "
          f"{TASKS} tasks of {TASK_SECONDS} s on {len(logs)} pods: submit -> first cold pod Ready {first_ready:.1f} s, "
          f"-> first result {first_result:.1f} s, -> {MAX} pods Ready {at_max:.1f} s, -> study done {done:.1f} s; "
          f"study done -> zero pods {to_zero:.1f} s; default group's replicas: always 1")
