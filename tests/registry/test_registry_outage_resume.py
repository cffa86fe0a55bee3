"""A registry outage in the middle of a study, then `mops run --resume` once it is back.

The test runs its own registry: a second process of the cluster's registry binary (CNCF distribution,
cluster/lib.sh's CLUSTER_BIN), on a free loopback port with its storage in tmp_path, so it can kill it
by PID and start it again on the same port and storage without touching the shared registry.

Worker A pulls the bundle while the registry is up (resolving it at submit time) and starts one task,
which waits for a gate file. The registry is killed; worker B joins with an empty bundle cache (a new
pod, as an autoscaler adds one) and takes every other task: each fails retryably (OciBundleError,
registry unreachable). A's task then finishes ok. `mops run --resume`, with the registry back, keeps
A's ok line, reruns exactly the failed tasks and appends their lines: the file keeps the failed lines,
and each task's latest line is ok.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from modelops.services.results_file import ResultsFile
from tests.helpers import clean_env, skip_or_fail

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
MOPS = [sys.executable, "-m", "modelops.cli.main"]
N_TASKS = 8

MODEL = '''
import os, time
from pathlib import Path


def simulate(params, seed):
    Path(params["started"], str(params["i"])).touch()
    waited = 0.0
    while not os.path.exists(params["gate"]):
        if waited > 300:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.02)
        waited += 0.02
    return {"i": params["i"], "pid": os.getpid()}
'''


def registry_binary() -> Path:
    """The registry binary where cluster/lib.sh keeps it (built by cluster/up.sh)."""
    done = subprocess.run(["bash", "-c", 'source cluster/lib.sh && printf %s "$CLUSTER_BIN"'], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    binary = Path(done.stdout) / "registry"
    if done.returncode != 0 or not done.stdout or not os.access(binary, os.X_OK):
        skip_or_fail(f"no registry binary at {binary} (cluster/up.sh builds it): {done.stderr.strip()}",
                     required_by="MODELOPS_CLUSTER_REQUIRED")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRegistry:
    """One registry process of this test: configured as cluster/up.sh configures the shared one."""

    def __init__(self, binary: Path, root: Path):
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        (root / "data").mkdir(parents=True)
        self.config = root / "config.yml"
        self.config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                               f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                               f"http:\n  addr: {self.address}\n")

    def start(self) -> None:
        assert self.process is None
        with (self.root / "registry.log").open("ab") as log:
            self.process = subprocess.Popen([str(self.binary), "serve", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"own registry on {self.address} did not come up:\n"
                            + (self.root / "registry.log").read_text()[-2000:])
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by the PID this test recorded: the registry is gone at once, as in an outage."""
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def own_registry(tmp_path):
    registry = OwnRegistry(registry_binary(), tmp_path / "registry")
    registry.start()
    try:
        yield registry
    finally:
        registry.kill()


def wait_for(condition, what: str, run: subprocess.Popen, limit: float = 240) -> None:
    """Wait for an event (the limit only stops a hung test; it is not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if run.poll() is not None:
            out, err = run.communicate()
            pytest.fail(f"mops run exited ({run.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data.splitlines(keepends=True) if line.endswith(b"\n")]


def test_a_study_that_failed_retryably_while_the_registry_was_down_resumes_when_it_is_back(
        own_registry, cluster_factory, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"name": "outage", "version": "1.0.0",
                                                    "entrypoint": "outage_model:simulate"}))
    (bundle / "outage_model.py").write_text(MODEL)
    push = subprocess.run([*MOPS, "bundle", "push", str(bundle), f"{own_registry.address}/modelops-test/outage:v1"],
                          capture_output=True, text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert push.returncode == 0, push.stdout + push.stderr
    digest = push.stdout.strip().splitlines()[-1]
    assert digest.startswith("sha256:"), push.stdout
    reference = f"{own_registry.address}/modelops-test/outage@{digest}"

    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"name": "outage", "bundle": reference, "parameters": [
        {"i": i, "started": str(started), "gate": str(gate)} for i in range(N_TASKS)]}))
    output = tmp_path / "results.jsonl"

    # The scheduler hands a worker only as many tasks as it has threads and queues the rest, so the
    # tasks not running on worker A wait on the scheduler for the next worker.
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION", "1.0")
    cluster = cluster_factory(n_workers=1, MODELOPS_BUNDLE_SOURCE="oci",
                              MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache-a"))
    args = [*MOPS, "run", str(study), "--scheduler", cluster.address, "--output", str(output)]
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                           env=clean_env())
    try:
        wait_for(lambda: any(started.iterdir()), "worker A started a task", run)
        own_registry.kill()  # the registry is down
        assert not own_registry.answers()
        cluster.start_worker(env={"MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "cache-b")}, name="worker-b")
        cluster.wait_for_workers(2)
        wait_for(lambda: len(lines(output)) >= N_TASKS - 1, "worker B failed the queued tasks", run)
        gate.touch()  # worker A's task, on the bundle it has, finishes
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, out + err
    first = lines(output)
    assert len(first) == N_TASKS and len({r["task_id"] for r in first}) == N_TASKS
    ok = [r for r in first if r["status"] == "ok"]
    down = [r for r in first if r["status"] == "failed"]
    assert len(ok) == 1 and len(down) == N_TASKS - 1, [r["status"] for r in first]
    assert ok[0]["provenance"]["worker"] != down[0]["provenance"]["worker"]
    for r in down:
        assert r["error"]["retryable"] is True and r["error"]["type"] == "OciBundleError", r["error"]
        assert reference in r["error"]["message"] and "unreachable" in r["error"]["message"], r["error"]
    assert f"tasks: {N_TASKS}  succeeded: 1  failed: {N_TASKS - 1}" in out
    assert "run again with --resume" in err
    kept = output.read_bytes()

    own_registry.start()  # back, on the same port and storage
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=clean_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"Resume from {output}: 1 kept (1 ok, 0 failed not retryable), {N_TASKS - 1} rerun (failed retryable), "
            "0 missing") in again.stdout
    assert f"{N_TASKS - 1} tasks on 2 worker(s)" in again.stdout and "1 already done" in again.stdout
    assert f"tasks: {N_TASKS - 1}  succeeded: {N_TASKS - 1}  failed: 0" in again.stdout  # only the failed ran
    assert f"{N_TASKS} tasks: {N_TASKS} ok, 0 failed (0 retryable), 0 without a result" in again.stdout

    data = output.read_bytes()
    assert data.startswith(kept)  # the earlier lines, failed ones included, are still there
    final = lines(output)
    rerun = final[N_TASKS:]
    assert len(final) == 2 * N_TASKS - 1
    assert sorted(r["task_id"] for r in rerun) == sorted(r["task_id"] for r in down)  # exactly the failed
    assert {r["status"] for r in rerun} == {"ok"}
    latest = list(ResultsFile(output).latest_records())
    assert len(latest) == N_TASKS and {r["status"] for r in latest} == {"ok"}
    assert {r["task_id"] for r in latest} == {r["task_id"] for r in first}
    assert {r["provenance"]["bundle"] for r in latest} == {reference}
