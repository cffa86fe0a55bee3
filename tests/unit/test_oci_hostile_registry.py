"""The worker's OCI bundle cache (bundles/oci_source.py) against a registry that lies: a real HTTP server
on loopback (tests/helpers.py LoopbackServer) answering the OCI distribution API for artifacts built by
bundles/artifact.py, then made to misbehave as an attacker's registry would. (The honest registry, the
CNCF distribution binary, is in tests/registry.)"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, LoopbackServer, serve_artifact, serve_bundle

from modelops.bundles.oci import RegistryClient
from modelops.bundles.oci_source import OciBundleCache, OciBundleError

pytest.importorskip("oras", reason="OCI bundles need the oras package (pip install modelops-dask[oci])")

SIR = REPO / "examples" / "sir"
MIB = 1024 * 1024


def sir_copy(tmp_path: Path, name: str = "sir", padding: int = 0) -> Path:
    target = tmp_path / name
    shutil.copytree(SIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    if padding:
        (target / "padding.bin").write_bytes(b"\1" * padding)
    return target


def layer_route(server: LoopbackServer, ref: str) -> tuple[str, dict]:
    """The layer blob's route of the artifact served under REF, and its descriptor in the manifest."""
    repo, digest = ref.split("/", 1)[1].split("@")
    manifest = json.loads(server.routes[f"/v2/{repo}/manifests/{digest}"])
    layer = manifest["layers"][0]
    return f"/v2/{repo}/blobs/{layer['digest']}", layer


def test_a_layer_larger_than_the_cache_bound_is_refused_before_it_is_downloaded(tmp_path):
    with LoopbackServer() as server:
        # past the bound's 1 MiB of files and the 10 MiB of tar headers its 10,000 entries could take
        ref = serve_bundle(server, "team/big", sir_copy(tmp_path, padding=12 * MIB))
        route, layer = layer_route(server, ref)
        cache = OciBundleCache(tmp_path / "cache", max_bytes=1 * MIB)
        with pytest.raises(OciBundleError) as err:
            cache.get(ref)
        fetched = [path for _, path in server.requests]
    assert route not in fetched, fetched
    message = str(err.value)
    assert ref in message and f"{layer['size']} bytes" in message and f"{MIB} bytes" in message, message
    assert "MODELOPS_BUNDLE_CACHE_MAX_MB" in message and not err.value.retryable
    assert not list((tmp_path / "cache" / "bundles").iterdir())


def test_a_blob_longer_than_its_descriptor_is_read_no_further_than_the_declared_size(tmp_path):
    """The registry answers the layer with 64 MiB more than the manifest says: the client stops reading
    at the declared size (the server cannot push more than the socket buffers take) and refuses it."""
    sent = []
    with LoopbackServer() as server:
        ref = serve_bundle(server, "team/long", sir_copy(tmp_path))
        route, _ = layer_route(server, ref)
        honest = server.routes[route]
        extra = 64 * MIB

        def longer(handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(honest) + extra))
            handler.end_headers()
            count = 0
            try:
                handler.wfile.write(honest)
                count += len(honest)
                for _ in range(extra // MIB):
                    handler.wfile.write(b"\0" * MIB)
                    count += MIB
            except OSError:
                pass  # the client hung up
            finally:
                sent.append(count)

        server.routes[route] = longer
        with pytest.raises(OciBundleError) as err:
            OciBundleCache(tmp_path / "cache", max_bytes=100 * MIB).get(ref)
    assert "more than the" in str(err.value) and "refusing it" in str(err.value), str(err.value)
    assert sent and sent[0] < len(honest) + 16 * MIB, sent


def test_a_trickling_blob_stops_at_the_overall_deadline(tmp_path):
    """One byte every 50 ms never trips a read timeout; the overall deadline stops it, retryably."""
    outcome: dict = {}
    with LoopbackServer() as server:
        ref = serve_bundle(server, "team/slow", sir_copy(tmp_path))
        route, _ = layer_route(server, ref)
        honest = server.routes[route]

        def trickle(handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(honest)))
            handler.end_headers()
            try:
                for byte in honest:
                    if server.stopping.wait(0.05):
                        return
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
            except OSError:
                pass

        server.routes[route] = trickle
        client = RegistryClient()
        client.blob_deadline_s = 1.0
        cache = OciBundleCache(tmp_path / "cache", max_bytes=100 * MIB, client=client)

        def get() -> None:
            started = time.monotonic()
            try:
                cache.get(ref)
            except OciBundleError as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=get)
        thread.start()
        thread.join(timeout=15)
        still_running = thread.is_alive()
    thread.join()  # the server is gone: the read ends
    assert not still_running, "the download was still running after 15 s"
    assert outcome["seconds"] < 10 and "error" in outcome, outcome
    assert "deadline" in str(outcome["error"]) and outcome["error"].retryable, outcome


def hand_made(layer: bytes) -> object:
    """An artifact whose layer is LAYER, verbatim (its digest and size in the manifest are right)."""
    from modelops.bundles.artifact import Artifact, canonical_json

    config = {"name": "x", "version": "1", "entrypoint": "m:simulate", "environment": {"kind": "image"},
              "content_digest": "sha256:" + "0" * 64}
    return Artifact(config=config, config_bytes=canonical_json(config), layer_bytes=layer)


def run_oci_task(make_runtime, tmp_path, ref: str):
    from modelops.tasks import Task

    runtime = make_runtime(MODELOPS_BUNDLE_SOURCE="oci", MODELOPS_BUNDLE_CACHE_DIR=str(tmp_path / "cache"),
                           MODELOPS_EXECUTOR_TYPE="direct")
    return runtime.execute(Task(bundle=ref, bundle_digest="sha256:" + "0" * 64, entrypoint="m:simulate",
                                params={}, seed=0))


def conflicting_layer() -> bytes:
    """A well-formed tar whose second entry cannot be written: its parent is the first, a file."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("a", "a/b"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


@pytest.mark.parametrize("layer, what", [
    (b"\x00not a tar\x00" * 100, "garbage"),
    (conflicting_layer(), "a file where a directory must go"),
])
def test_a_layer_that_cannot_be_unpacked_fails_the_task_and_is_not_retried(make_runtime, tmp_path, layer, what):
    """Unpack and disk errors come back as bundle errors, not retryable: `--resume` would rerun them forever."""
    with LoopbackServer() as server:
        ref = serve_artifact(server, "team/broken", hand_made(layer))
        result = run_oci_task(make_runtime, tmp_path, ref)
    assert result.status == "failed", what
    assert result.error.type == "OciBundleError" and not result.error.retryable, result.error
    assert ref in result.error.message and "unpack" in result.error.message, result.error.message


def test_a_registry_that_breaks_off_mid_blob_stays_retryable(make_runtime, tmp_path):
    with LoopbackServer() as server:
        ref = serve_bundle(server, "team/cut", sir_copy(tmp_path))
        route, _ = layer_route(server, ref)
        honest = server.routes[route]

        def cut(handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(honest)))
            handler.end_headers()
            handler.wfile.write(honest[: len(honest) // 2])  # then the connection closes

        server.routes[route] = cut
        result = run_oci_task(make_runtime, tmp_path, ref)
    assert result.status == "failed" and result.error.type == "OciBundleError"
    assert result.error.retryable, result.error
