"""Where a store's bytes live: whole objects put once, listed and read back by key.

`LocalBlobs` (a directory: a volume in the cluster, or a laptop's disk) writes each object to a
temporary name, fsyncs it and renames it into place, so a reader never sees half an object and a
killed writer leaves nothing behind under a real key. `S3Blobs` (pyarrow's S3 filesystem, any
S3-compatible server) puts each object in one request, which S3 makes visible whole or not at all.
`HttpBlobs` reads a store through `mops results serve` (read-only), for users who cannot reach the
store itself: a volume in the cluster is read through the Kubernetes API this way.

Every operation retries transient errors (a store restarting, a network blip) with exponential
backoff up to a deadline, logging each retry; errors a retry cannot fix (no such bucket, access
denied, a full or read-only disk) fail at once with the store named.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from modelops.results.url import StoreError, StoreUrl

logger = logging.getLogger("modelops.results")

T = TypeVar("T")

# Keys are relative paths of plain segments: what the store writes itself (job names, batch names).
KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
TMP_PREFIX = ".tmp-"
# S3 error codes a retry cannot fix (pyarrow puts the service's code in its OSError message).
PERMANENT_S3_ERRORS = ("AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                       "InvalidBucketName", "AllAccessDisabled", "ACCESS_DENIED")
PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                    errno.EISDIR}


class BlobNotFound(StoreError, KeyError):
    """No object under that key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreUnreachable(StoreError):
    """The store did not answer within the retry deadline, or refused for a reason a retry cannot fix."""


def check_key(key: str) -> str:
    """`key` if it is a relative path of plain segments (no '..', no leading dot or slash)."""
    if not key or not all(KEY_SEGMENT.match(part) for part in key.split("/")):
        raise StoreError(f"store key {key!r} is not a relative path of plain segments ([A-Za-z0-9._-], "
                         "not starting with '.')")
    return key


@dataclass(frozen=True)
class Blob:
    key: str
    size: int


class Blobs(Protocol):
    description: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str = "") -> list[Blob]: ...


@dataclass(frozen=True)
class Retry:
    """Exponential backoff for transient store errors: `deadline` seconds in all (0: one try)."""

    deadline: float = 30.0
    first: float = 0.5
    cap: float = 30.0

    def call(self, what: str, description: str, operation: Callable[[], T]) -> T:
        start = time.monotonic()
        delay, attempt = self.first, 1
        while True:
            try:
                return operation()
            except BlobNotFound:
                raise
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below; anything unexpected is re-raised
                if not isinstance(exc, OSError) or permanent(exc):
                    raise StoreUnreachable(f"results store {description}: {what} failed: {error_text(exc)}") from None
                left = self.deadline - (time.monotonic() - start)
                if left <= 0:
                    raise StoreUnreachable(
                        f"results store {description}: {what} failed for {time.monotonic() - start:.0f} s "
                        f"({attempt} attempts): {error_text(exc)}") from None
                wait = min(delay, self.cap, left)
                logger.warning("results store %s unreachable (%s, attempt %d, retrying in %.1f s): %s",
                               description, what, attempt, wait, error_text(exc))
                time.sleep(wait)
                delay, attempt = delay * 2, attempt + 1


def permanent(exc: OSError) -> bool:
    if exc.errno in PERMANENT_ERRNOS:
        return True
    text = str(exc)
    return any(code in text for code in PERMANENT_S3_ERRORS)


def error_text(exc: BaseException) -> str:
    """One line: the error's type and first line (pyarrow's S3 errors run over several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


class LocalBlobs:
    """Objects as files under `root` (created if missing)."""

    def __init__(self, root: Path, retry: Retry = Retry()):
        self.root = Path(root)
        self.retry = retry
        self.description = f"file://{self.root}"

    def put(self, key: str, data: bytes) -> None:
        path = self.root / check_key(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
            os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a crash
            finally:
                os.close(dir_fd)

        self.retry.call(f"writing {key}", self.description, write)

    def get(self, key: str) -> bytes:
        path = self.root / check_key(key)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                raise BlobNotFound(f"results store {self.description}: no object {key}") from None

        return self.retry.call(f"reading {key}", self.description, read)

    def list(self, prefix: str = "") -> list[Blob]:
        base = self.root / check_key(prefix) if prefix else self.root

        def walk() -> list[Blob]:
            if not self.root.is_dir():
                raise StoreUnreachable(f"results store {self.description}: no such directory")
            found = []
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue  # temporary objects of a write in progress, or left by a killed writer
                    full = os.path.join(dirpath, name)
                    try:
                        size = os.stat(full).st_size
                    except FileNotFoundError:
                        continue
                    found.append(Blob(os.path.relpath(full, self.root).replace(os.sep, "/"), size))
            return sorted(found, key=lambda b: b.key)

        return self.retry.call(f"listing {prefix or '/'}", self.description, walk)


class S3Blobs:
    """Objects in an S3 bucket under a prefix, through pyarrow's S3 filesystem."""

    def __init__(self, url: StoreUrl, retry: Retry = Retry(), env: dict | None = None):
        from pyarrow import fs

        env = os.environ if env is None else env
        options: dict = {"region": url.region or "us-east-1", "connect_timeout": 5, "request_timeout": 30,
                         # our own Retry decides, with a deadline and a log line per attempt
                         "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=1)}
        if url.endpoint:
            scheme, _, host = url.endpoint.partition("://")
            options.update(endpoint_override=host, scheme=scheme)
        if env.get("AWS_ACCESS_KEY_ID"):
            options.update(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
                           session_token=env.get("AWS_SESSION_TOKEN") or None)
        self.fs = fs.S3FileSystem(**options)
        self.base = url.path
        self.retry = retry
        self.description = url.describe()

    def _path(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            with self.fs.open_output_stream(path) as out:
                out.write(data)

        self.retry.call(f"writing {key}", self.description, write)

    def get(self, key: str) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            try:
                with self.fs.open_input_stream(path) as stream:
                    return stream.read()
            except FileNotFoundError:
                raise BlobNotFound(f"results store {self.description}: no object {key}") from None

        return self.retry.call(f"reading {key}", self.description, read)

    def list(self, prefix: str = "") -> list[Blob]:
        from pyarrow import fs

        base = self._path(prefix) if prefix else self.base

        def walk() -> list[Blob]:
            if not prefix:  # the bucket itself must exist: a typo in its name is not an empty store
                info = self.fs.get_file_info(self.base.split("/", 1)[0])
                if info.type == fs.FileType.NotFound:
                    raise StoreUnreachable(f"results store {self.description}: no bucket {self.base.split('/')[0]!r}")
            infos = self.fs.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
            start = len(self.base) + 1
            return sorted((Blob(i.path[start:], i.size or 0) for i in infos
                           if i.type == fs.FileType.File and not i.base_name.startswith(".")),
                          key=lambda b: b.key)

        return self.retry.call(f"listing {prefix or '/'}", self.description, walk)


class HttpBlobs:
    """A store read through `mops results serve` (read-only). `fetch(path)` GETs a path of the server's
    API (e.g. through the Kubernetes API server's service proxy) and returns the body, or raises
    BlobNotFound for a 404."""

    def __init__(self, fetch: Callable[[str], bytes], description: str, retry: Retry = Retry()):
        self.fetch = fetch
        self.description = description
        self.retry = retry

    def put(self, key: str, data: bytes) -> None:
        raise StoreError(f"results store {self.description} is read-only here (served by mops results serve)")

    def get(self, key: str) -> bytes:
        return self.retry.call(f"reading {key}", self.description, lambda: self.fetch(f"v1/get/{check_key(key)}"))

    def list(self, prefix: str = "") -> list[Blob]:
        path = f"v1/list/{check_key(prefix)}" if prefix else "v1/list/"
        body = self.retry.call(f"listing {prefix or '/'}", self.description, lambda: self.fetch(path))
        return [Blob(item["key"], int(item["size"])) for item in json.loads(body)]

    def store_status(self) -> dict:
        """The server's own check of its store: {"url", "ok", "error"}."""
        return json.loads(self.retry.call("checking the store", self.description, lambda: self.fetch("v1/store")))


def open_blobs(url: StoreUrl, retry: Retry = Retry()) -> Blobs:
    if url.scheme == "file":
        return LocalBlobs(Path(url.path), retry)
    return S3Blobs(url, retry)
