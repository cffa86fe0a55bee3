"""`mops bundle push/inspect` against the real OCI registry the local cluster runs (cluster/lib.sh:
localhost:${MODELOPS_REGISTRY_PORT:-5000}; .cluster/env exports it as REGISTRY).

Without that registry the tests skip with the reason; with MODELOPS_CLUSTER_REQUIRED=1 they fail.
The auth test starts a second registry (the same binary, htpasswd auth, its own storage) and stops
it by PID.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import warnings

import pytest
from registry_support import CLUSTER_STATE, SIR, unavailable, copy_bundle, mops_bundle, pushed, registry_address

from modelops.bundles import artifact


@pytest.fixture(scope="module")
def registry() -> str:
    return registry_address()


def registry_digest(registry: str, repo: str, tag: str) -> str:
    request = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


def test_two_copies_with_different_mtimes_push_to_the_same_digest(registry, tmp_path):
    marker = uuid.uuid4().hex
    repo = f"modelops-test/bundle-{marker[:12]}"
    one = copy_bundle(tmp_path / "machine-a" / "sir", 1_000_000_000, marker)
    two = copy_bundle(tmp_path / "machine-b" / "sir", time.time(), marker)
    first = pushed(mops_bundle("push", str(one), f"{registry}/{repo}:a"))
    second = pushed(mops_bundle("push", str(two), f"{registry}/{repo}:b"))
    assert first == second
    # what the registry itself says it stored under each tag
    assert registry_digest(registry, repo, "a") == registry_digest(registry, repo, "b") == first
    # a changed file is a different artifact
    (two / "marker.txt").write_text(marker + "!")
    assert pushed(mops_bundle("push", str(two), f"{registry}/{repo}:c")) != first


def test_inspect_round_trips_by_tag_and_by_digest(registry, tmp_path):
    marker = uuid.uuid4().hex
    source = copy_bundle(tmp_path / "sir", 1_500_000_000, marker, lock=True)
    ref = f"{registry}/modelops-test/bundle-{marker[:12]}:1.0.0"
    digest = pushed(mops_bundle("push", str(source), ref))
    built = artifact.build(source)
    by_tag = mops_bundle("inspect", "--json", ref)
    assert by_tag.returncode == 0, by_tag.stderr
    info = json.loads(by_tag.stdout)
    assert info["digest"] == digest
    assert (info["name"], info["version"], info["entrypoint"]) == ("sir", "1.0.0", "sir_model:simulate")
    assert info["environment"]["kind"] == "lock" and info["environment"]["packages"] == ["six==1.17.0"]
    assert info["content_digest"] == built.config["content_digest"]
    by_digest = mops_bundle("inspect", info["pinned"])
    assert by_digest.returncode == 0, by_digest.stderr
    assert f"digest:      {digest}" in by_digest.stdout
    assert "entrypoint:  sir_model:simulate" in by_digest.stdout
    assert "own lock requirements.txt (1 packages" in by_digest.stdout


def test_unknown_tag_and_unknown_digest_fail_naming_the_ref(registry):
    missing_tag = f"{registry}/modelops-test/never-pushed-{uuid.uuid4().hex[:8]}:1.0.0"
    result = mops_bundle("inspect", missing_tag)
    assert result.returncode == 2
    assert f"{missing_tag}: not found in registry {registry}" in result.stderr
    missing_digest = f"{registry}/modelops-test/sir@sha256:{'0' * 64}"
    result = mops_bundle("inspect", missing_digest)
    assert result.returncode == 2 and f"{missing_digest}: not found" in result.stderr


def test_an_image_is_not_taken_for_a_bundle(registry, tmp_path):
    # any manifest that is not a bundle's: push a bundle-shaped one by hand would need the library;
    # the cluster's worker image is in this registry (cluster/publish.sh)
    tags = urllib.request.urlopen(f"http://{registry}/v2/modelops-dask/tags/list", timeout=10)
    tag = json.load(tags)["tags"][0]
    result = mops_bundle("inspect", f"{registry}/modelops-dask:{tag}")
    assert result.returncode == 2
    assert f"{registry}/modelops-dask:{tag}: not a modelops bundle" in result.stderr


def test_a_tampered_blob_in_the_registry_is_refused(registry, tmp_path):
    storage = CLUSTER_STATE / "registry" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not registry.endswith(":5000") or not storage.is_dir() or not os.access(storage, os.W_OK):
        unavailable(f"the registry's storage {storage} is not writable here (tampering needs it)")
    marker = uuid.uuid4().hex
    source = copy_bundle(tmp_path / "sir", 1_500_000_000, marker)
    ref = f"{registry}/modelops-test/bundle-{marker[:12]}:1.0.0"
    pushed(mops_bundle("push", str(source), ref))
    config_hex = artifact.build(source).config_digest.split(":")[1]
    blob = storage / config_hex[:2] / config_hex / "data"
    data = bytearray(blob.read_bytes())
    data[data.index(b'"sir"')+1] ^= 0x20  # same size, one byte changed ("Sir")
    blob.write_bytes(bytes(data))
    result = mops_bundle("inspect", ref)
    assert result.returncode == 2
    assert f"{ref}: the bundle config served for sha256:{config_hex} hashes to" in result.stderr
    assert "refusing it (tampered or corrupted)" in result.stderr


def test_unreachable_registry_fails_at_once_naming_the_ref(tmp_path):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ref = f"127.0.0.1:{port}/modelops-test/sir:1.0.0"
    for args in (("push", str(SIR), ref), ("inspect", ref)):
        result = mops_bundle(*args)
        assert result.returncode == 2
        assert f"{ref}: registry 127.0.0.1:{port} is unreachable" in result.stderr
        assert "Connection refused" in result.stderr


def _registry_binary() -> str | None:
    """The cluster's registry binary: its pid file holds "PID PATH" (cluster/lib.sh), else PATH."""
    pid_file = CLUSTER_STATE / "run" / "registry.pid"
    try:
        path = pid_file.read_text().split()[1]
        if os.access(path, os.X_OK):
            return path
    except (OSError, IndexError):
        pass
    return shutil.which("registry")


@pytest.fixture
def auth_registry(registry, tmp_path):
    """A second registry (same binary) with htpasswd auth on a free loopback port; stopped by PID."""
    binary = _registry_binary()
    if not binary:
        unavailable("no registry binary (the cluster's registry process or `registry` on PATH)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cheap bcrypt cost
    (tmp_path / "htpasswd").write_text(f"modelops:{hashed}\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: modelops-test\n"
        f"    path: {tmp_path / 'htpasswd'}\n")
    log = open(tmp_path / "registry.log", "wb")
    proc = subprocess.Popen([binary, "serve", str(tmp_path / "config.yml")], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the auth registry did not start: {(tmp_path / 'registry.log').read_text()}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_credentials_come_from_the_docker_config_file(auth_registry, tmp_path):
    ref = f"{auth_registry}/team/sir:1.0.0"
    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    denied = mops_bundle("push", str(SIR), ref, env={"DOCKER_CONFIG": str(anonymous), "HOME": str(tmp_path)})
    assert denied.returncode == 2
    assert ref in denied.stderr and str(anonymous / "config.json") in denied.stderr, denied.stderr
    assert "docker login" in denied.stderr
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps(
        {"auths": {auth_registry: {"auth": base64.b64encode(b"modelops:guess").decode()}}}))
    for args in (("push", str(SIR), ref), ("inspect", ref)):
        refused = mops_bundle(*args, env={"DOCKER_CONFIG": str(wrong), "HOME": str(tmp_path)})
        assert refused.returncode == 2
        assert f"{ref}: registry {auth_registry} denied" in refused.stderr, refused.stderr
        assert str(wrong / "config.json") in refused.stderr
    logged_in = tmp_path / "logged-in"
    logged_in.mkdir()
    token = base64.b64encode(b"modelops:s3cret").decode()
    (logged_in / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": token}}}))
    env = {"DOCKER_CONFIG": str(logged_in), "HOME": str(tmp_path)}
    digest = pushed(mops_bundle("push", str(SIR), ref, env=env))
    info = mops_bundle("inspect", "--json", ref, env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["digest"] == digest
