"""Worker side of OCI bundles: pull each digest once into a local cache, verify it, serve it from there.

A worker is handed digest-pinned references (`HOST/REPO@sha256:...`; the client resolves a tag once
at submit time, `RegistryClient.resolve`), so every task of a study runs the same bytes. The cache
(`<cache_dir>/bundles/<manifest digest hex>/`) is shared by the worker processes of a pod:

- one pull per digest: an flock per digest serialises pullers across threads and processes; the
  ones that waited find the entry complete;
- verification: the registry client checks the manifest and blobs against their digests, and the
  unpacked files must hash to the config's content digest. What every `get` verifies: the entry holds
  nothing the digest does not cover (bytecode found there is removed), and its files have the stat
  signature (path, size, mtime, ctime, inode of every file, and of entry.json) they had when this
  process last hashed them. The first `get` of a bundle in a process, and any `get` that finds the
  signature changed (a file written, added, removed or replaced, even with its size and mtime kept:
  the ctime moves), hashes the files again against the content digest; a tampered or half-deleted
  entry is then refused, removed and pulled again. Hashing a large bundle on every task would cost
  more than the task;
- a size bound: a bundle whose layer is declared larger than `max_bytes` is refused before it is
  downloaded (and its unpacked bytes are bounded the same way); after a pull, the least recently used
  other entries are evicted until the cache holds at most `max_bytes`, except those in use: a process
  holds a shared flock on `locks/<key>.use` of every bundle it got, for its lifetime (its zygotes and
  warm children import from the entry long after `get`), and eviction takes that lock exclusively
  without waiting, so it removes only bundles no live worker process uses;
- downloads stream to disk, stop at the size the manifest declares and have an overall deadline
  (bundles/oci.py); a pull stages in `bundles/.pull-<key>-*/`, and one killed mid-way leaves it
  behind: the next pull removes those whose lock is free and that are older than STAGING_GRACE_S;
- failures are `OciBundleError` naming the reference, `retryable` when the registry was unreachable
  or the artifact missing; entries already cached keep being served.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelops.bundles import artifact
from modelops.bundles.cache_entries import last_used as _last_used
from modelops.bundles.cache_entries import mark_used as _mark_used
from modelops.bundles.cache_entries import complete_entries
from modelops.bundles.bundle import Bundle, BundleError, read_manifest
from modelops.bundles.digest import content_digest, covered
from modelops.bundles.oci import Reference, RegistryClient, RegistryError, RetryableError, parse_reference

log = logging.getLogger("modelops.bundles.oci")

SOURCE = "oci"
ENTRY_FILE = "entry.json"
FILES_DIR = "files"
LAYER_FILE = "layer.tar"  # in the staging directory, removed once unpacked
STAGING_PREFIX = ".pull-"  # .pull-<key>-<random>: a pull in progress (or one that died)
STAGING_GRACE_S = 600.0  # a dead pull's staging directory is removed once this old (and its lock is free)


class OciBundleError(RetryableError, BundleError):
    """An OCI bundle that cannot be pulled or verified (a BundleError that says if a retry may help)."""


@dataclass(frozen=True)
class CachedBundle:
    bundle: Bundle
    reference: str  # digest-pinned
    manifest_digest: str
    path: Path
    pulled: bool  # False: served from the cache
    pull_seconds: float


class OciBundleCache:
    def __init__(self, cache_dir: Path, max_bytes: int, client: RegistryClient | None = None):
        if max_bytes <= 0:
            raise ValueError(f"bundle cache max_bytes={max_bytes!r} is invalid: allowed a positive number of bytes")
        self.root = Path(cache_dir)
        self.max_bytes = max_bytes
        self.client = client or RegistryClient()
        (self.root / "bundles").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        self.pulls = 0  # pulls done by this instance (tests and provenance)
        self._in_use: dict[str, int] = {}  # key -> fd holding LOCK_SH on locks/<key>.use
        self._in_use_lock = threading.Lock()
        self._signatures: dict[str, tuple] = {}  # key -> stat signature of the entry when last hashed here
        self.staging_grace_s = STAGING_GRACE_S

    # -- public --------------------------------------------------------------------------------------
    def get(self, ref: str | Reference) -> CachedBundle:
        reference = ref if isinstance(ref, Reference) else self._parse(ref)
        if not reference.digest:
            raise OciBundleError(f"bundle {reference}: a worker runs digest-pinned references only "
                                 f"(HOST/REPO@sha256:DIGEST); the client resolves tags when it submits")
        key = reference.digest.split(":", 1)[1]
        started = time.monotonic()
        held_before = self._hold(key)  # from here on no other process evicts it
        try:
            with self._locked(f"{key}.lock"):
                cached = self._verified_entry(reference, key)
                if cached is None:
                    entry = self._pull(reference, key)
                    cached = self._cached(reference, key, entry, pulled=True, seconds=time.monotonic() - started)
        except BaseException:
            if not held_before:
                self._release(key)
            raise
        if cached.pulled:
            self._evict(keep=key)
        return cached

    def entries(self) -> dict[str, int]:
        """Cached digests (hex) and their sizes in bytes."""
        return complete_entries(self.root / "bundles", ENTRY_FILE)

    def release(self) -> None:
        """Release the bundles this process got: other processes may evict them from now on, and a later
        `get` holds its bundle anew. The worker's cache is shared by every runtime of its process
        (resolver.shared_oci_cache), so a worker holds them until it exits."""
        with self._in_use_lock:
            fds = list(self._in_use.values())
            self._in_use.clear()
        for fd in fds:
            os.close(fd)

    # -- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _parse(text: str) -> Reference:
        try:
            return parse_reference(text)
        except RegistryError as exc:
            raise OciBundleError(str(exc)) from None

    def _hold(self, key: str) -> bool:
        """A shared lock on locks/<key>.use for as long as this process may import the bundle (its
        zygotes and warm children import from the entry long after `get`); True when already held."""
        with self._in_use_lock:
            if key in self._in_use:
                return True
            fd = os.open(self.root / "locks" / f"{key}.use", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits while an evictor removes it: then it is pulled again
            except BaseException:
                os.close(fd)
                raise
            self._in_use[key] = fd
            return False

    def _release(self, key: str) -> None:
        with self._in_use_lock:
            fd = self._in_use.pop(key, None)
        if fd is not None:
            os.close(fd)

    @contextmanager
    def _locked(self, name: str, blocking: bool = True):
        with open(self.root / "locks" / name, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _verified_entry(self, reference: Reference, key: str) -> CachedBundle | None:
        entry = self.root / "bundles" / key
        if not entry.exists():
            return None
        try:
            signature = _signature(entry)
            if signature is not None and signature == self._signatures.get(key):
                return self._cached(reference, key, entry, pulled=False, seconds=0.0)
            self._signatures.pop(key, None)
            _remove_uncovered(entry / FILES_DIR, reference)
            before = _signature(entry)
            recorded = json.loads((entry / ENTRY_FILE).read_text())["content_digest"]
            actual = content_digest(entry / FILES_DIR)
            if actual == recorded and before is not None and _signature(entry) == before:
                self._signatures[key] = before  # unchanged while hashed: what the digest describes
        except (OSError, ValueError, KeyError) as exc:
            actual, recorded = f"unreadable ({exc})", "?"
        if actual != recorded:
            log.warning("Bundle cache entry %s for %s does not match its content digest (%s, expected %s): "
                        "removing it and pulling again", entry, reference, actual, recorded)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return self._cached(reference, key, entry, pulled=False, seconds=0.0)

    def _reclaim_staging(self, key: str) -> None:
        """Remove the staging directories of pulls that died (killed mid-download, the pod evicted...).
        A pull holds locks/<key>.lock for as long as its staging directory exists, so one whose lock is
        free belongs to no live pull; it must also be older than STAGING_GRACE_S. The caller holds KEY's
        lock: that key's staging directories are all dead."""
        for staging in (self.root / "bundles").glob(f"{STAGING_PREFIX}*"):
            owner = staging.name[len(STAGING_PREFIX):].split("-", 1)[0]
            if len(owner) != 64:
                continue  # not one of ours
            try:
                age = time.time() - staging.stat().st_mtime
            except FileNotFoundError:
                continue
            if owner == key:
                shutil.rmtree(staging, ignore_errors=True)
                continue
            if age < self.staging_grace_s:
                continue
            with self._locked(f"{owner}.lock", blocking=False) as free:
                if free:
                    log.warning("Removing %s, left by a pull that did not finish", staging)
                    shutil.rmtree(staging, ignore_errors=True)

    def _pull(self, reference: Reference, key: str) -> Path:
        """Pull, verify and store REFERENCE. Registry trouble is retryable as the client says; a layer
        that does not unpack, or a cache that cannot be written, is not: a rerun meets the same bytes
        and the same disk (an exception escaping here would come back retryable, rerun forever)."""
        try:
            return self._pull_into_staging(reference, key)
        except (OciBundleError, BundleError):
            raise
        except (tarfile.TarError, OSError, UnicodeError, EOFError) as exc:
            raise OciBundleError(f"bundle {reference}: cannot unpack it into the cache {self.root}: "
                                 f"{type(exc).__name__}: {exc}", retryable=False) from None

    def _pull_into_staging(self, reference: Reference, key: str) -> Path:
        self._reclaim_staging(key)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{key}-", dir=self.root / "bundles"))
        try:
            layer = staging / LAYER_FILE  # streamed to disk, never held in memory
            try:
                bound = (f"the worker's bundle cache bound (MODELOPS_BUNDLE_CACHE_MAX_MB: {self.max_bytes} bytes "
                         f"of files, plus tar headers)")
                config, manifest_digest = self.client.fetch(reference, layer, artifact.layer_bound(self.max_bytes),
                                                            bound)
            except RegistryError as exc:
                raise OciBundleError(f"bundle {reference}: {exc}", retryable=exc.retryable) from None
            self.pulls += 1
            artifact.unpack(layer, staging / FILES_DIR, max_bytes=self.max_bytes)
            layer.unlink()
            actual = content_digest(staging / FILES_DIR)
            if actual != config.get("content_digest"):
                raise OciBundleError(f"bundle {reference}: unpacked files hash to {actual}, the artifact's "
                                     f"config says {config.get('content_digest')}: refusing it")
            manifest = read_manifest(staging / FILES_DIR)
            for field in ("name", "version", "entrypoint"):
                if manifest[field] != config.get(field):
                    raise OciBundleError(f"bundle {reference}: bundle.json {field}={manifest[field]!r} but the "
                                         f"artifact's config says {config.get(field)!r}")
            (staging / ENTRY_FILE).write_text(json.dumps(
                {"reference": str(reference), "manifest_digest": manifest_digest,
                 "content_digest": actual, "config": config}, sort_keys=True))
            _mark_used(staging)  # so that no other process evicts it as never used
            entry = self.root / "bundles" / key
            signature = _signature(staging)  # relative paths and file stats: the same once renamed
            os.rename(staging, entry)
            if signature is not None:
                self._signatures[key] = signature
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("Pulled bundle %s (%s %s) into %s", reference, config["name"], config["version"], entry)
        return entry

    def _cached(self, reference: Reference, key: str, entry: Path, pulled: bool, seconds: float) -> CachedBundle:
        _mark_used(entry)
        meta = json.loads((entry / ENTRY_FILE).read_text())
        manifest = read_manifest(entry / FILES_DIR)
        bundle = Bundle(name=manifest["name"], version=manifest["version"], entrypoint=manifest["entrypoint"],
                        source=SOURCE, digest=meta["content_digest"], import_path=str(entry / FILES_DIR),
                        warmup=manifest.get("warmup"))
        return CachedBundle(bundle=bundle, reference=str(reference), manifest_digest=meta["manifest_digest"],
                            path=entry / FILES_DIR, pulled=pulled, pull_seconds=seconds)

    def _evict(self, keep: str) -> None:
        with self._locked("evict.lock"):
            sizes = self.entries()
            total = sum(sizes.values())
            by_age = sorted((k for k in sizes if k != keep), key=lambda k: _last_used(self.root / "bundles" / k))
            for key in by_age:
                if total <= self.max_bytes:
                    break
                with self._locked(f"{key}.lock", blocking=False) as free, \
                        self._locked(f"{key}.use", blocking=False) as unused:
                    if not free or not unused:  # being pulled or verified, or held by a live worker process
                        continue
                    shutil.rmtree(self.root / "bundles" / key, ignore_errors=True)
                    total -= sizes[key]
                    log.info("Evicted bundle %s from the cache (%d bytes; cache now %d of %d bytes)",
                             key, sizes[key], total, self.max_bytes)


def _remove_uncovered(files: Path, reference: Reference) -> None:
    """Remove what the content digest does not cover (bytecode, VCS directories) from a cache entry.
    Nothing here writes any (bundle processes write no bytecode, layers carrying any are refused), so
    what is found was planted, and Python would import a planted unchecked-hash .pyc instead of the
    verified source."""
    for directory, dirs, names in os.walk(files):
        relative = os.path.relpath(directory, files)
        for name in [*dirs, *names]:
            path = os.path.join(directory, name)
            if covered(os.path.normpath(os.path.join(relative, name))):
                continue
            log.warning("Bundle cache entry for %s holds %s, which its content digest does not cover: removing it",
                        reference, path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
                dirs.remove(name)
            else:
                os.unlink(path)


def _signature(entry: Path) -> tuple | None:
    """The stat signature of ENTRY's files and entry.json (relative path, size, mtime, ctime, inode), or
    None when the files hold something the content digest does not cover (then they must be cleaned
    and hashed). ctime cannot be set back by a process: a rewrite with the old size and mtime shows."""
    files = entry / FILES_DIR
    stats = []
    for directory, dirs, names in os.walk(files):
        relative = os.path.relpath(directory, files)
        for name in [*dirs, *names]:
            if not covered(os.path.normpath(os.path.join(relative, name))):
                return None
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            stats.append((os.path.normpath(os.path.join(relative, name)), st.st_mode, st.st_size, st.st_mtime_ns,
                          st.st_ctime_ns, st.st_ino))
    st = os.lstat(entry / ENTRY_FILE)
    stats.append((ENTRY_FILE, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(sorted(stats))
