"""Bundle artifacts in an OCI registry: references, push, resolve and verified fetch (ORAS Python SDK).

oras-py does the registry protocol (blob upload sessions, token auth, credentials from the docker
config file and its credential helpers). This module adds what a bundle needs on top: a strict
reference syntax, manifests we serialise ourselves (so the manifest digest is reproducible), one
attempt per request with a timeout instead of oras' minutes of retries, verification of every
byte fetched against its digest, and errors that name the reference.
"""

from __future__ import annotations

import functools
import hashlib
import io
import ipaddress
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelops.bundles.artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    Artifact,
    canonical_json,
)
from modelops.bundles.digest import sha256_digest

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_TITLE = "bundle.tar"
REFERENCE_FORM = "HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]"
# (connect, read) seconds for each registry request
TIMEOUT = (10, 120)
# A blob's whole download, however the registry paces it (checked after each read, so it ends at most
# one read timeout late): a registry trickling bytes never trips the read timeout on its own.
BLOB_DEADLINE_S = 600.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
CHUNK = 1024 * 1024

_HOST = r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+(?=:))(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<host>{_HOST})/(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class RetryableError(Exception):
    """An error that says whether trying again later may succeed (`retryable`: registry unreachable,
    artifact missing, server error) or not (bad reference, denied, not a bundle). `retryable`
    survives pickling, so an error raised on a worker reaches the client whole."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self):
        return type(self), (str(self), self.retryable)


class RegistryError(RetryableError):
    """A registry operation on a reference failed; the message names the reference."""


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def target(self) -> str:
        """What the manifests endpoint is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> Reference:
        return Reference(self.host, self.repository, None, digest)


def parse_reference(text: str) -> Reference:
    """Parse HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]; anything else is an error naming the text."""
    match = _REFERENCE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise RegistryError(f"bundle reference {text!r} is invalid: expected {REFERENCE_FORM} "
                            f"(a registry host, a lowercase repository path, then an optional tag or "
                            f"sha256 digest), for example localhost:5000/bundles/sir:1.0.0")
    return Reference(match["host"], match["repo"], match["tag"], match["digest"])


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def docker_config_path() -> Path:
    """The docker CLI's credentials file: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _oras():
    try:
        import oras.provider
        import requests
    except ImportError as exc:
        raise RegistryError(f"OCI bundles need the 'oras' package ({exc}): pip install 'modelops-dask[oci]'") from None
    return oras.provider, requests


class RegistryClient:
    """Push, resolve and fetch bundle artifacts. `plain_http=None`: HTTP for loopback registries
    (as docker does for localhost), HTTPS elsewhere; True/False force one."""

    def __init__(self, plain_http: bool | None = None, docker_config: Path | None = None):
        self.plain_http = plain_http
        self.docker_config = docker_config or docker_config_path()
        self.blob_deadline_s = BLOB_DEADLINE_S

    # -- transport ---------------------------------------------------------------------------------
    def _open_session(self, ref: Reference):
        """An oras Registry for ref's host, with the auth backend its challenge asks for (docker
        does the same: `Basic` for htpasswd registries, bearer tokens for GHCR, Harbor, ...)."""
        _, requests = _oras()
        insecure = is_loopback(ref.host) if self.plain_http is None else self.plain_http
        prefix = "http" if insecure else "https"
        try:
            ping = requests.get(f"{prefix}://{ref.host}/v2/", timeout=TIMEOUT)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"{ref}: TLS with registry {ref.host} failed ({_short(exc)}); if it "
                                f"serves plain HTTP, pass --plain-http", retryable=False) from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{ref}: registry {ref.host} is unreachable ({prefix}://{ref.host}/v2/): "
                                f"{type(exc).__name__}: {_short(exc)}", retryable=True) from None
        if ping.status_code not in (200, 401):
            raise RegistryError(f"{ref}: {prefix}://{ref.host}/v2/ answered HTTP {ping.status_code}: "
                                f"not an OCI registry API", retryable=ping.status_code >= 500)
        challenge = ping.headers.get("WWW-Authenticate", "") if ping.status_code == 401 else ""
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        registry = _registry_class()(hostname=ref.host, insecure=insecure, tls_verify=True, auth_backend=backend)
        container = registry.get_container(f"{ref.repository}:{ref.tag or 'latest'}")
        configs = [str(self.docker_config)] if self.docker_config.is_file() else None
        registry.auth.load_configs(container, configs=configs)
        if backend == "basic" and not getattr(registry.auth, "_basic_auth", None):
            raise RegistryError(f"{ref}: registry {ref.host} requires a login (HTTP Basic) and "
                                f"{self.docker_config} holds no credentials for {ref.host}; "
                                f"run `docker login {ref.host}`")
        return registry, container

    @contextmanager
    def _session(self, ref: Reference):
        """_open_session's registry and container, its connections closed when done (none kept alive)."""
        registry, container = self._open_session(ref)
        try:
            yield registry, container
        finally:
            registry.session.close()

    def _request(self, registry, ref: Reference, method: str, url: str, what: str, **kw):
        _, requests = _oras()
        try:
            response = registry.do_request(url, method, **kw)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{ref}: registry {ref.host} is unreachable ({what}): "
                                f"{type(exc).__name__}: {_short(exc)}", retryable=True) from None
        except ValueError as exc:  # oras: "Cannot respond to request for authentication."
            raise RegistryError(f"{ref}: registry {ref.host} asked for credentials it could not get "
                                f"({what}): {exc}; log in (docker login {ref.host}) so that "
                                f"{self.docker_config} holds them") from None
        if response.status_code in (401, 403):
            raise RegistryError(f"{ref}: registry {ref.host} denied {what} (HTTP {response.status_code}); "
                                f"credentials are read from {self.docker_config}")
        return response

    # -- push --------------------------------------------------------------------------------------
    def push(self, artifact: Artifact, ref: Reference) -> str:
        """Upload the artifact's blobs and manifest under ref's tag; return the manifest digest."""
        if ref.digest or not ref.tag:
            raise RegistryError(f"bundle reference {str(ref)!r}: push needs a tag and no digest "
                                f"(HOST[:PORT]/REPO:TAG); the digest is what push prints")
        _, requests = _oras()
        with self._session(ref) as (registry, container):
            manifest_bytes = manifest_for(artifact)
            with tempfile.TemporaryDirectory(prefix="mops-bundle-") as tmp:
                for name, data, media_type in (("config.json", artifact.config_bytes, CONFIG_MEDIA_TYPE),
                                               (LAYER_TITLE, artifact.layer_bytes, LAYER_MEDIA_TYPE)):
                    path = Path(tmp) / name
                    path.write_bytes(data)
                    descriptor = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
                    try:
                        response = registry.upload_blob(str(path), container, descriptor)
                    except requests.exceptions.RequestException as exc:
                        raise RegistryError(f"{ref}: registry {ref.host} is unreachable (uploading {name}): "
                                            f"{type(exc).__name__}: {_short(exc)}", retryable=True) from None
                    except Exception as exc:  # oras raises ValueError when the upload session fails
                        if any(code in str(exc) for code in ("UNAUTHORIZED", "DENIED")):
                            raise RegistryError(f"{ref}: registry {ref.host} denied uploading {name} "
                                                f"({_short(exc)}); credentials are read from "
                                                f"{self.docker_config}") from None
                        raise RegistryError(f"{ref}: uploading {name} to {ref.host} failed: "
                                            f"{type(exc).__name__}: {_short(exc)}", retryable=True) from None
                    if response.status_code not in (200, 201, 202):
                        raise RegistryError(f"{ref}: registry {ref.host} refused {name}: "
                                            f"HTTP {response.status_code} {_errors(response)}",
                                            retryable=response.status_code >= 500)
            url = f"{registry.prefix}://{container.manifest_url(ref.tag)}"
            response = self._request(registry, ref, "PUT", url, "the manifest upload", data=manifest_bytes,
                                     headers={"Content-Type": MANIFEST_MEDIA_TYPE})
            if response.status_code not in (200, 201):
                raise RegistryError(f"{ref}: registry {ref.host} refused the manifest: "
                                    f"HTTP {response.status_code} {_errors(response)}",
                                    retryable=response.status_code >= 500)
            digest = sha256_digest(manifest_bytes)
            stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise RegistryError(f"{ref}: registry {ref.host} stored the manifest as {stored}, "
                                    f"but its bytes hash to {digest}")
            return digest

    # -- read --------------------------------------------------------------------------------------
    def manifest(self, ref: Reference) -> tuple[dict, str]:
        """The bundle manifest for ref and its digest, verified against ref's digest when pinned."""
        with self._session(ref) as (registry, container):
            return self._manifest(registry, container, ref)

    def resolve(self, ref: Reference) -> Reference:
        """The digest-pinned form of ref: a tag is resolved once (at submit time), so every task of a
        study runs the same bytes even if the tag moves."""
        _, digest = self.manifest(ref)
        return ref.pinned(digest)

    def _manifest(self, registry, container, ref: Reference) -> tuple[dict, str]:
        url = f"{registry.prefix}://{container.manifest_url(ref.target)}"
        response = self._request(registry, ref, "GET", url, "the manifest", stream=True,
                                 headers={"Accept": MANIFEST_MEDIA_TYPE, "Accept-Encoding": "identity"})
        with response:
            if response.status_code == 404:
                raise RegistryError(f"{ref}: not found in registry {ref.host} "
                                    f"(no manifest {ref.target!r} in repository {ref.repository!r})", retryable=True)
            if response.status_code != 200:
                raise RegistryError(f"{ref}: registry {ref.host} answered HTTP {response.status_code} for the "
                                    f"manifest {_errors(response, stream=True)}", retryable=response.status_code >= 500)
            sink = io.BytesIO()
            self._read(response, ref, sink, MAX_MANIFEST_BYTES, "the manifest",
                       f"the manifest is more than {MAX_MANIFEST_BYTES} bytes: refusing it")
        body = sink.getvalue()
        digest = sha256_digest(body)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"{ref}: the manifest served hashes to {digest}, not {ref.digest}: "
                                f"refusing it (tampered or corrupted)")
        try:
            manifest = json.loads(body)
        except ValueError:
            raise RegistryError(f"{ref}: the manifest is not JSON") from None
        config = (manifest.get("config") if isinstance(manifest, dict) else None) or {}
        layers = (manifest.get("layers") if isinstance(manifest, dict) else None) or []
        if not isinstance(config, dict) or config.get("mediaType") != CONFIG_MEDIA_TYPE \
                or not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) \
                or layers[0].get("mediaType") != LAYER_MEDIA_TYPE:
            raise RegistryError(f"{ref}: not a modelops bundle (config media type "
                                f"{config.get('mediaType')!r}, expected {CONFIG_MEDIA_TYPE!r} and one "
                                f"{LAYER_MEDIA_TYPE!r} layer); push bundles with `mops bundle push`")
        return manifest, digest

    def _blob(self, registry, container, ref: Reference, descriptor: dict, what: str, sink: BinaryIO,
              max_bytes: int, bound: str) -> None:
        """Stream the blob DESCRIPTOR names into SINK, verified: its declared size within MAX_BYTES (BOUND
        says whose) before any byte is asked for, reading stopped at the declared size, hashed on the
        way, and the whole download within the client's blob_deadline_s."""
        digest = descriptor.get("digest", "")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RegistryError(f"{ref}: the manifest names {what} by digest {digest!r}, not a sha256 digest")
        size = descriptor.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{ref}: the manifest gives {what} the size {size!r}, not a number of bytes")
        if size > max_bytes:
            raise RegistryError(f"{ref}: {what} {digest} is {size} bytes, more than {bound} allows "
                                f"({max_bytes} bytes): refusing it before downloading it")
        url = f"{registry.prefix}://{container.get_blob_url(digest)}"
        deadline = time.monotonic() + self.blob_deadline_s
        response = self._request(registry, ref, "GET", url, what, stream=True,
                                 headers={"Accept-Encoding": "identity"})
        with response:
            if response.status_code == 404:
                raise RegistryError(f"{ref}: {what} {digest} is missing from registry {ref.host}", retryable=True)
            if response.status_code != 200:
                raise RegistryError(f"{ref}: registry {ref.host} answered HTTP {response.status_code} for "
                                    f"{what} {digest}", retryable=response.status_code >= 500)
            actual, read = self._read(response, ref, sink, size, what,
                                      f"{what} served for {digest} is more than the {size} bytes the manifest "
                                      f"says: refusing it (tampered or corrupted)", deadline)
        if actual != digest or read != size:
            raise RegistryError(f"{ref}: {what} served for {digest} hashes to {actual} ({read} bytes, "
                                f"manifest says {size}): refusing it (tampered or corrupted)")

    def _read(self, response, ref: Reference, sink: BinaryIO, limit: int, what: str, too_long: str,
              deadline: float | None = None) -> tuple[str, int]:
        """Copy RESPONSE's body into SINK as it arrives (raw bytes: no decompression), at most LIMIT
        bytes, before DEADLINE; (sha256 digest, bytes read)."""
        _, requests = _oras()
        deadline = deadline or time.monotonic() + self.blob_deadline_s
        digest = hashlib.sha256()
        read = 0
        raw = response.raw
        try:
            while True:
                try:
                    chunk = raw.read1(CHUNK, decode_content=False)  # what has arrived, one read at a time
                except (requests.exceptions.RequestException, OSError, *_urllib3_errors()) as exc:
                    raise RegistryError(f"{ref}: registry {ref.host} broke off {what} after {read} bytes: "
                                        f"{type(exc).__name__}: {_short(exc)}", retryable=True) from None
                if not chunk:
                    break
                read += len(chunk)
                if read > limit:
                    raise RegistryError(f"{ref}: {too_long}")
                digest.update(chunk)
                sink.write(chunk)  # a disk error here is the caller's (not the registry's, not retryable)
                if time.monotonic() > deadline:
                    raise RegistryError(f"{ref}: downloading {what} from {ref.host} passed its deadline "
                                        f"({self.blob_deadline_s:g} s, {read} bytes read)", retryable=True)
        finally:
            response.close()  # a body left unread is dropped with its connection, never drained
        return "sha256:" + digest.hexdigest(), read

    def inspect(self, ref: Reference) -> dict:
        """What a bundle artifact is: its manifest digest and the config's fields (verified)."""
        with self._session(ref) as (registry, container):
            manifest, digest = self._manifest(registry, container, ref)
            try:
                config = json.loads(self._config(registry, container, ref, manifest))
            except ValueError:
                raise RegistryError(f"{ref}: the bundle config is not JSON") from None
            missing = [k for k in ("name", "version", "entrypoint", "environment", "content_digest") if k not in config]
            if missing:
                raise RegistryError(f"{ref}: the bundle config lacks {', '.join(missing)}")
            layer = manifest["layers"][0]
            return {"reference": str(ref), "digest": digest, "pinned": str(ref.pinned(digest)), **config,
                    "layer_digest": layer["digest"], "layer_size": layer["size"]}

    def _config(self, registry, container, ref: Reference, manifest: dict) -> bytes:
        sink = io.BytesIO()
        self._blob(registry, container, ref, manifest["config"], "the bundle config", sink, MAX_CONFIG_BYTES,
                   "a bundle config")
        return sink.getvalue()

    def fetch(self, ref: Reference, layer_path: Path, max_layer_bytes: int,
              bound: str = "the size bound") -> tuple[dict, str]:
        """(config, manifest digest); the layer streamed into LAYER_PATH. Every byte is verified against
        its digest, and a layer declared larger than MAX_LAYER_BYTES (BOUND names it) is never asked for."""
        with self._session(ref) as (registry, container):
            manifest, digest = self._manifest(registry, container, ref)
            try:
                config = json.loads(self._config(registry, container, ref, manifest))
            except ValueError:
                raise RegistryError(f"{ref}: the bundle config is not JSON") from None
            if not isinstance(config, dict):
                raise RegistryError(f"{ref}: the bundle config is not a JSON object")
            with open(layer_path, "xb") as sink:
                self._blob(registry, container, ref, manifest["layers"][0], "the bundle layer", sink,
                           max_layer_bytes, bound)
            return config, digest


def manifest_for(artifact: Artifact) -> bytes:
    """The OCI image manifest of a bundle artifact, as canonical bytes (hence a reproducible digest)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": artifact.config_digest,
                   "size": len(artifact.config_bytes)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": artifact.layer_digest,
                    "size": len(artifact.layer_bytes),
                    "annotations": {"org.opencontainers.image.title": LAYER_TITLE}}],
        "annotations": {"org.opencontainers.image.title": artifact.config["name"],
                        "org.opencontainers.image.version": artifact.config["version"]},
    }
    return canonical_json(manifest)


def _errors(response, stream: bool = False) -> str:
    """The registry's error codes and messages (from at most 64 KiB of a streamed body)."""
    try:
        if stream:
            body = json.loads(response.raw.read(64 * 1024, decode_content=False) or b"{}")
        else:
            body = response.json()
        errors = body.get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except Exception:
        return "" if stream else (response.text or "")[:200]


def _short(exc: Exception) -> str:
    """The cause of a transport error (urllib3 buries `[Errno 111] Connection refused` in its repr)."""
    text = str(exc)
    cause = re.search(r"\[Errno -?\d+\][^\"')]*", text)
    if cause:
        return cause.group(0).strip()
    return text if len(text) < 300 else text[:300] + "..."


def _urllib3_errors() -> tuple[type[Exception], ...]:
    """urllib3's own errors, which a raw read raises (requests wraps them only in its own reads)."""
    import urllib3.exceptions

    return (urllib3.exceptions.HTTPError,)


@functools.lru_cache(maxsize=1)
def _registry_class():
    """Built on first use, so that importing this module does not need oras."""
    provider, _ = _oras()
    from oras.auth.basic import BasicAuth

    class Registry(provider.Registry):
        """oras' Registry with one attempt per request and a timeout (oras retries for minutes)."""

        def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
            headers = dict(headers or {})
            basic = getattr(self.auth, "_basic_auth", None)
            if isinstance(self.auth, BasicAuth):
                if basic:  # htpasswd registries: send the credentials with every request
                    headers.update(self.auth.get_auth_header())
            elif getattr(self.auth, "token", None):
                headers.update(self.auth.get_auth_header())
            send = dict(data=data, json=json, stream=stream, verify=self._tls_verify, timeout=TIMEOUT)
            response = self.session.request(method, url, headers=headers, **send)
            if response.status_code not in (401, 403) or isinstance(self.auth, BasicAuth):
                return response  # a Basic registry that still says 401 refused the credentials
            headers, changed = self.auth.authenticate_request(response, headers)
            if not changed:
                return response
            return self.session.request(method, url, headers=headers, **send)

    return Registry
