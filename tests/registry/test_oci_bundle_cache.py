"""The worker's OCI bundle cache (bundles/oci_source.py) against the local cluster's real registry:
pull once, verify, refuse tampered entries, stay within its bound, fail retryably when the registry
is down while serving what it has."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid

import pytest
from registry_support import copy_bundle, mops_bundle, pushed, registry_address

from modelops.bundles.oci import RegistryClient, parse_reference
from modelops.bundles.oci_source import OciBundleCache, OciBundleError


@pytest.fixture(scope="module")
def registry() -> str:
    return registry_address()


def push_unique(registry: str, tmp_path, name: str = "sir", tag: str = "1.0.0") -> tuple[str, str]:
    """Push a bundle with unique content; return (tag ref, digest-pinned ref)."""
    marker = uuid.uuid4().hex
    source = copy_bundle(tmp_path / f"src-{marker[:8]}", 1_600_000_000, marker)
    repo = f"modelops-test/cache-{marker[:12]}"
    digest = pushed(mops_bundle("push", str(source), f"{registry}/{repo}:{tag}"))
    return f"{registry}/{repo}:{tag}", f"{registry}/{repo}@{digest}"


def test_client_resolves_a_tag_once_to_a_pinned_reference(registry, tmp_path):
    tag_ref, pinned = push_unique(registry, tmp_path)
    assert str(RegistryClient().resolve(parse_reference(tag_ref))) == pinned
    # the tag moves; the pinned reference still names the first artifact
    pushed(mops_bundle("push", str(copy_bundle(tmp_path / "other", 1, "moved")), tag_ref))
    assert str(RegistryClient().resolve(parse_reference(tag_ref))) != pinned
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    assert (cache.get(pinned).path / "marker.txt").read_text() != "moved"


def test_concurrent_gets_of_a_new_bundle_pull_it_once(registry, tmp_path):
    _, pinned = push_unique(registry, tmp_path)
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    results, errors = [], []

    def get():
        try:
            results.append(cache.get(pinned))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.pulls == 1
    assert sum(r.pulled for r in results) == 1
    assert len({r.path for r in results}) == 1
    first = results[0]
    assert first.bundle.source == "oci" and first.bundle.name == "sir"
    assert first.manifest_digest == pinned.split("@")[1]
    # another worker process on the same cache directory finds it there
    script = ("import json, sys; from modelops.bundles.oci_source import OciBundleCache as C;"
              "c = C(sys.argv[1], 10**7); r = c.get(sys.argv[2]);"
              "print(json.dumps({'pulls': c.pulls, 'digest': r.bundle.digest}))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache"), pinned],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == {"pulls": 0, "digest": first.bundle.digest}


def test_concurrent_processes_pull_once(registry, tmp_path):
    _, pinned = push_unique(registry, tmp_path)
    script = ("import json, sys; from modelops.bundles.oci_source import OciBundleCache as C;"
              "c = C(sys.argv[1], 10**7); c.get(sys.argv[2]); print(c.pulls)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), pinned],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    pulls = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(pulls) == [0, 0, 1]


def test_a_tampered_cache_entry_is_refused_and_pulled_again(registry, tmp_path, caplog):
    _, pinned = push_unique(registry, tmp_path)
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    entry = cache.get(pinned)
    model = entry.path / "sir_model.py"
    original = model.read_text()
    model.write_text(original + "\nraise SystemExit('tampered')\n")
    with caplog.at_level("WARNING", logger="modelops.bundles.oci"):
        again = cache.get(pinned)
    assert again.pulled and cache.pulls == 2
    assert model.read_text() == original
    assert "does not match its content digest" in caplog.text and pinned in caplog.text
    (entry.path / "bundle.json").unlink()  # a half-deleted entry too
    assert cache.get(pinned).pulled and cache.pulls == 3


def test_the_cache_stays_within_its_bound_evicting_the_least_recently_used(registry, tmp_path):
    refs = [push_unique(registry, tmp_path)[1] for _ in range(3)]
    probe = OciBundleCache(tmp_path / "probe", max_bytes=10**7)
    for ref in refs:
        probe.get(ref)
    size = max(probe.entries().values())  # the three differ only in a same-length marker
    cache = OciBundleCache(tmp_path / "cache", max_bytes=int(size * 2.5))
    a, b, c = refs
    cache.get(a)
    cache.get(b)
    cache.get(a)  # a is now more recently used than b
    cache.release()  # as if this worker process had exited: its bundles are no longer in use
    cache.get(c)  # over the bound: b goes
    kept = set(cache.entries())
    hexes = [r.split("@sha256:")[1] for r in refs]
    assert kept == {hexes[0], hexes[2]}
    assert sum(cache.entries().values()) <= cache.max_bytes
    assert cache.get(b).pulled  # pulled again when needed


def test_unreachable_registry_is_retryable_and_cached_bundles_keep_serving(registry, tmp_path):
    _, pinned = push_unique(registry, tmp_path)
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    cache.get(pinned)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"127.0.0.1:{port}/modelops-test/sir@sha256:{'1' * 64}"
    with pytest.raises(OciBundleError) as err:
        cache.get(dead)
    assert err.value.retryable and dead in str(err.value) and "unreachable" in str(err.value)
    missing = pinned.split("@")[0] + "@sha256:" + "2" * 64
    with pytest.raises(OciBundleError) as err:
        cache.get(missing)
    assert err.value.retryable and "not found" in str(err.value)
    assert not cache.get(pinned).pulled  # still served from the cache


def test_a_tag_reference_is_refused_on_the_worker(registry, tmp_path):
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    with pytest.raises(OciBundleError, match=r"digest-pinned references only"):
        cache.get(f"{registry}/modelops-test/sir:1.0.0")
    with pytest.raises(OciBundleError, match=r"is invalid: expected HOST"):
        cache.get("sir")
    with pytest.raises(ValueError, match=r"max_bytes=0 is invalid"):
        OciBundleCache(tmp_path / "other", max_bytes=0)


def test_a_pulled_bundle_runs(registry, tmp_path):
    _, pinned = push_unique(registry, tmp_path)
    cache = OciBundleCache(tmp_path / "cache", max_bytes=10**7)
    path = cache.get(pinned).path
    script = ("import json, sys; from modelops.bundles.oci_source import OciBundleCache as C;"
              "b = C(sys.argv[1], 10**7).get(sys.argv[2]).bundle;"
              "out = b.load_entrypoint()({'beta': 0.3, 'gamma': 0.1}, 7); print(json.dumps(sorted(out)))")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache"), pinned],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)  # the SIR model returned its outputs
    assert path.is_dir()
