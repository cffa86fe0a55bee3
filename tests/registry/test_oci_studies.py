"""Studies on OCI bundles, end to end: the local cluster's real registry, real `dask worker --preload`
processes with MODELOPS_BUNDLE_SOURCE=oci, the real `mops run --local` command.

- a study by tag is pinned to one digest at submit: every task runs it, even when the tag is re-pushed
  to other content while the study runs;
- a registry that goes down gives retryable failures for bundles not cached, the worker keeps serving
  the bundles it has, and the bundle pulls once the registry is back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from registry_support import mops_bundle, pushed, registry_address

from modelops.bundles.digest import content_digest
from modelops.bundles.oci import RegistryClient, parse_reference
from modelops.tasks import Task
from tests.helpers import clean_env

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]

# A bundle whose tasks report the content they run (marker.txt) and, when given a gate file, say
# they started and wait for it: the test moves the tag while tasks are known to be running.
GATED = '''
import os, time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def simulate(params, seed):
    if params.get("started"):
        Path(params["started"], str(params["i"])).touch()
        waited = 0.0
        while not os.path.exists(params["gate"]):
            if waited > 300:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.02)
            waited += 0.02
    return {"marker": (HERE / "marker.txt").read_text(), "pid": os.getpid()}
'''


@pytest.fixture(scope="module")
def registry() -> str:
    return registry_address()


def make_bundle(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "bundle.json").write_text(json.dumps({"name": "gated", "version": "1.0.0",
                                                       "entrypoint": "gated:simulate"}))
    (directory / "gated.py").write_text(GATED)
    (directory / "marker.txt").write_text(marker)
    return directory


def push(directory: Path, ref: str) -> str:
    return pushed(mops_bundle("push", str(directory), ref))


def oci_env(tmp_path: Path) -> dict[str, str]:
    return {"MODELOPS_BUNDLE_SOURCE": "oci", "MODELOPS_BUNDLE_CACHE_DIR": str(tmp_path / "bundle-cache")}


def wait_for(condition, what: str, process: subprocess.Popen | None = None, limit: float = 240) -> None:
    """Wait for an event (not a timing assertion: the limit only stops a hung test)."""
    deadline = time.monotonic() + limit
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"mops run exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_study_by_tag_runs_every_task_on_one_digest_while_the_tag_moves(registry, tmp_path):
    repo = f"{registry}/modelops-test/study-{uuid.uuid4().hex[:12]}"
    first_marker, second_marker = f"first {uuid.uuid4().hex}", f"second {uuid.uuid4().hex}"
    first = push(make_bundle(tmp_path / "v1", first_marker), f"{repo}:live")
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    n = 8
    study = tmp_path / "study.json"
    study.write_text(json.dumps({
        "name": "by-tag", "bundle": f"{repo}:live",
        "parameters": [{"i": i, "started": str(started), "gate": str(gate)} for i in range(n)],
    }))
    output = tmp_path / "results.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "modelops.cli.main", "run", str(study), "--local", "--workers", "2",
         "--executor", "cold", "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**clean_env(), **oci_env(tmp_path)},
    )
    try:
        wait_for(lambda: any(started.iterdir()), "the first task started", run)
        before_move = len(list(started.iterdir()))
        second = push(make_bundle(tmp_path / "v2", second_marker), f"{repo}:live")  # the tag moves
        assert second != first
        assert RegistryClient().resolve(parse_reference(f"{repo}:live")).digest == second
        gate.touch()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, out + err
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == n and {r["status"] for r in results} == {"ok"}, results
    assert before_move < n  # most tasks started after the tag moved (2 workers x 1 thread)
    # one digest, the one the tag named at submit time, recorded in every task's provenance
    assert {r["provenance"]["bundle"] for r in results} == {f"{repo}@{first}"}
    assert {r["outputs"]["marker"] for r in results} == {first_marker}
    assert len({r["provenance"]["bundle_digest"] for r in results}) == 1
    assert len({r["provenance"]["pid"] for r in results}) == n  # cold: a fresh process per task
    assert "bundle gated sha256:" in out


class Relay:
    """A TCP relay on its own loopback port in front of the registry: the registry as the workers see
    it can go down (`stop`) and come back (`start`) without touching the shared registry."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = 0
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def relay(registry):
    relay = Relay(registry)
    relay.start()
    yield relay
    relay.stop()


def test_a_registry_that_is_down_fails_tasks_retryably_and_the_worker_keeps_serving(
        registry, relay, cluster_factory, tmp_path):
    from distributed import Client

    from modelops.services.dask_simulation import DaskSimulationService

    repo = f"modelops-test/down-{uuid.uuid4().hex[:12]}"
    cached_dir = make_bundle(tmp_path / "cached", f"cached {uuid.uuid4().hex}")
    new_dir = make_bundle(tmp_path / "new", f"new {uuid.uuid4().hex}")
    cached = f"127.0.0.1:{relay.port}/{repo}@{push(cached_dir, f'{registry}/{repo}:cached')}"
    new = f"127.0.0.1:{relay.port}/{repo}@{push(new_dir, f'{registry}/{repo}:new')}"
    cluster = cluster_factory(n_workers=1, **oci_env(tmp_path))
    with Client(cluster.address) as client:
        service = DaskSimulationService(client)
        info = service.resolve_bundle(cached)  # pulled through the relay into the worker's cache
        assert info["digest"] == content_digest(cached_dir)

        def task(ref: str, directory: Path, seed: int) -> Task:
            return Task(bundle=ref, bundle_digest=content_digest(directory), entrypoint="gated:simulate",
                        params={}, seed=seed)

        relay.stop()  # the registry is down for the workers
        results = {r.seed: r for r in service.run([task(new, new_dir, 1), task(cached, cached_dir, 2),
                                                   task(new, new_dir, 3), task(cached, cached_dir, 4)])}
        for seed in (1, 3):
            down = results[seed]
            assert down.status == "failed" and down.error.retryable, down
            assert down.error.kind == "runtime" and down.error.type == "OciBundleError"
            assert new in down.error.message and "unreachable" in down.error.message
            assert down.provenance.bundle == new
        for seed in (2, 4):  # the worker still serves what it has
            assert results[seed].ok, results[seed].error
            assert results[seed].outputs["marker"] == (cached_dir / "marker.txt").read_text()
            assert results[seed].provenance.bundle == cached  # the manifest digest, in provenance

        relay.start()  # back (same port): the retry pulls and runs
        again = service.run([task(new, new_dir, 1)])[0]
        assert again.ok, again.error
        assert again.outputs["marker"] == (new_dir / "marker.txt").read_text()
        workers = service.worker_runtime()
        assert [w["config"]["bundle_source"] for w in workers.values()] == ["oci"]
