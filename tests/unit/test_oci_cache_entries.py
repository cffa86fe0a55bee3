"""What the worker's OCI bundle cache (bundles/oci_source.py) keeps on disk, and who may change it: bytecode,
bundles in use by other worker processes, killed pulls, and what a cache hit verifies. The registry is a
real HTTP server on loopback serving artifacts built by bundles/artifact.py (tests/helpers.py); the same
cache against the CNCF registry is in tests/registry/test_oci_bundle_cache.py."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LoopbackServer, make_task, serve_bundle

from modelops.bundles.oci_source import OciBundleCache

pytest.importorskip("oras", reason="OCI bundles need the oras package (pip install modelops-dask[oci])")

MODEL = "def simulate(params, seed):\n    return {'value': 1}\n"


def small_bundle(root: Path, name: str, marker: str = "") -> Path:
    bundle = root / name
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text(json.dumps({"name": name, "version": "1", "entrypoint": "m:simulate"}))
    (bundle / "m.py").write_text(MODEL)
    (bundle / "marker.txt").write_text(marker or name)
    return bundle


@pytest.fixture
def registry():
    with LoopbackServer() as server:
        yield server


def run_in_process(cache_dir: Path, ref: str) -> dict:
    """Another worker process: get REF from the cache and call its entrypoint."""
    script = ("import json, sys; from modelops.bundles.oci_source import OciBundleCache as C;"
              "b = C(sys.argv[1], 10**7).get(sys.argv[2]).bundle;"
              "print(json.dumps(b.load_entrypoint()({}, 0)))")
    done = subprocess.run([sys.executable, "-c", script, str(cache_dir), ref], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_planted_bytecode_in_the_cache_does_not_change_what_runs(registry, tmp_path):
    """Bytecode is outside the content digest: an unchecked-hash .pyc planted beside a verified module
    is what Python would import. The cache holds no bytecode: a get removes any it finds."""
    ref = serve_bundle(registry, "team/planted", small_bundle(tmp_path, "planted"))
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    files = cache.get(ref).path
    fake = tmp_path / "fake.py"
    fake.write_text("def simulate(params, seed):\n    return {'value': 666}\n")
    planted = files / "__pycache__" / f"m.{sys.implementation.cache_tag}.pyc"
    planted.parent.mkdir()
    py_compile.compile(str(fake), cfile=str(planted), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert run_in_process(tmp_path / "cache", ref) == {"value": 1}
    assert not planted.exists()
    cache.release()


def test_bundle_children_write_no_bytecode_into_the_cache(registry, tmp_path, make_runtime, monkeypatch):
    """Whatever the worker's own environment says (here: bytecode allowed), no process running a
    bundle (children of every executor, and the worker itself under `direct`) writes any."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    ref = serve_bundle(registry, "team/nobytecode", small_bundle(tmp_path, "nobytecode"))
    for executor, extra in (("cold", {"MODELOPS_COLD_START": "fork"}), ("cold", {"MODELOPS_COLD_START": "spawn"}),
                            ("isolated_warm", {}), ("direct", {})):
        cache_dir = tmp_path / f"cache-{executor}-{extra.get('MODELOPS_COLD_START', '')}"
        runtime = make_runtime(MODELOPS_BUNDLE_SOURCE="oci", MODELOPS_BUNDLE_CACHE_DIR=str(cache_dir),
                               MODELOPS_EXECUTOR_TYPE=executor, **extra)
        result = runtime.execute(make_task(runtime, ref))
        assert result.ok and result.outputs == {"value": 1}, result.error
        written = [str(p) for p in cache_dir.rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"]
        assert not written, (executor, extra, written)


HOLDER = """
import json, sys
from modelops.bundles.oci_source import OciBundleCache
bundle = OciBundleCache(sys.argv[1], int(sys.argv[3])).get(sys.argv[2]).bundle
print("ready", flush=True)
sys.stdin.readline()  # meanwhile another worker process pulls other bundles
try:
    print(json.dumps(bundle.load_entrypoint()({}, 0)), flush=True)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


def test_a_bundle_in_use_by_another_worker_process_is_not_evicted(registry, tmp_path):
    """Worker process A got a bundle and has not imported it yet (a zygote starting, a warm child to
    come); process B pulls another bundle past the bound. B must not remove A's bundle while A lives;
    once A is gone, it may."""
    padding = "x" * 10_000
    refs = [serve_bundle(registry, f"team/held-{i}", small_bundle(tmp_path, f"held-{i}", padding + str(i)))
            for i in range(3)]
    bound = 15_000  # room for one bundle
    cache_dir = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache_dir), refs[0], str(bound)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        other = OciBundleCache(cache_dir, bound)
        other.get(refs[1])  # over the bound: the least recently used entry, refs[0], would go
        held = refs[0].split("@sha256:")[1]
        assert held in other.entries()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline()) == {"value": 1}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    other.get(refs[2])  # A has exited: its bundle is no longer held
    assert held not in other.entries()
    other.release()


def test_a_cache_hit_does_not_hash_the_bundle_again_unless_a_file_changed(registry, tmp_path, monkeypatch):
    """Hashing is counted by wrapping the real content_digest. The first get of a process hashes (here: the
    pull); later gets compare stat signatures, and hash again only when a file changed, even a change that
    keeps the file's size and mtime (its ctime moves)."""
    from modelops.bundles import oci_source

    hashed = []
    real = oci_source.content_digest
    monkeypatch.setattr(oci_source, "content_digest", lambda root: hashed.append(root) or real(root))
    ref = serve_bundle(registry, "team/hits", small_bundle(tmp_path, "hits"))
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    model = cache.get(ref).path / "m.py"
    for _ in range(5):
        assert not cache.get(ref).pulled
    assert len(hashed) == 1, hashed
    before = model.stat()
    model.write_text(MODEL.replace("1", "2"))  # same size
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    again = cache.get(ref)
    assert again.pulled and model.read_text() == MODEL  # hashed, refused, pulled again
    assert len(hashed) == 3  # the check that failed, and the new pull
    cache.release()


def test_a_killed_pulls_staging_directory_is_reclaimed_but_never_a_live_one(registry, tmp_path):
    """Process A pulls a bundle whose layer trickles in; its staging directory (the partial layer) is left
    behind when A is killed. Another process's pull removes it once it is old and its lock is free, and
    leaves it alone while A is alive, however old it looks."""
    import signal
    import time

    from tests.helpers import wait_until

    slow = serve_bundle(registry, "team/slow", small_bundle(tmp_path, "slow"))
    manifest = json.loads(registry.routes[f"/v2/team/slow/manifests/{slow.split('@')[1]}"])
    route = f"/v2/team/slow/blobs/{manifest['layers'][0]['digest']}"
    layer = registry.routes[route]

    def trickle(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(layer)))
        handler.end_headers()
        try:
            handler.wfile.write(layer[:4096])
            handler.wfile.flush()
            registry.stopping.wait(60)
        except OSError:
            pass

    registry.routes[route] = trickle
    others = [serve_bundle(registry, f"team/other-{i}", small_bundle(tmp_path, f"other-{i}")) for i in range(2)]
    cache_dir = tmp_path / "cache"
    script = "import sys; from modelops.bundles.oci_source import OciBundleCache as C; C(sys.argv[1], 10**7).get(sys.argv[2])"
    puller = subprocess.Popen([sys.executable, "-c", script, str(cache_dir), slow])
    bundles = cache_dir / "bundles"

    def staging() -> list[Path]:
        return [p for p in bundles.glob(".pull-*") if (p / "layer.tar").is_file()]

    try:
        wait_until(lambda: staging(), timeout=60, what="the slow pull's staging directory")
        (left,) = staging()
        an_hour_ago = time.time() - 3600
        os.utime(left, (an_hour_ago, an_hour_ago))
        cache = OciBundleCache(cache_dir, 10**7)
        cache.get(others[0])
        assert left.is_dir()  # A is alive and holds its pull's lock: its staging directory stays
    finally:
        puller.send_signal(signal.SIGKILL)
        puller.wait(timeout=30)
    assert left.is_dir()  # killed mid-download: left behind
    cache.get(others[1])
    assert not left.exists()
    cache.release()
