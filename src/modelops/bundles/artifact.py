"""A bundle directory as a reproducible OCI artifact: one tar layer plus a JSON config.

The same files must give the same bytes, hence the same digests, on every machine and on every push:
entries are the files the bundle's content digest covers (bundles/digest.py), sorted by path, with
mtime 0, owner 0:0 and no names, and mode 0644 (0755 when the owner may execute). The layer is a
plain, uncompressed tar: gzip output depends on the zlib build (zlib-ng and zlib differ), and bundles
are small source trees. The config records what `mops bundle inspect` shows (name, version,
entrypoint, environment) and the bundle's content digest, so a puller can verify what it unpacked.
"""

from __future__ import annotations

import collections
import io
import json
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from modelops.bundles.bundle import BundleError, read_manifest
from modelops.bundles.digest import CHUNK, IGNORED_DIRS, bundle_files, content_digest, covered, sha256_digest
from modelops.bundles.environments import LOCK_FILE as ENVIRONMENT_LOCK
from modelops.bundles.environments import WHEELS_DIR, check_wheels_dir, parse_lock

ARTIFACT_TYPE = "application/vnd.modelops.bundle.v1"
CONFIG_MEDIA_TYPE = "application/vnd.modelops.bundle.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.modelops.bundle.layer.v1.tar"


@dataclass(frozen=True)
class Artifact:
    """The two blobs of a bundle artifact, and what they describe."""

    config: dict
    config_bytes: bytes
    layer_bytes: bytes

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def layer_digest(self) -> str:
        return sha256_digest(self.layer_bytes)


def canonical_json(value: dict) -> bytes:
    """JSON with sorted keys and no whitespace: one value, one byte string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def environment(directory: Path) -> dict:
    """What Python environment the bundle needs: the worker image's, or its own lock's."""
    lock = directory / ENVIRONMENT_LOCK
    if not lock.is_file():
        return {"kind": "image"}
    data = lock.read_bytes()
    pins = parse_lock(data.decode(errors="replace"), f"bundle {directory} {ENVIRONMENT_LOCK}")
    packages = sorted(f"{p.name}=={p.version}" for p in pins)
    wheels_dir = directory / WHEELS_DIR
    wheels = [p.name for p in check_wheels_dir(wheels_dir, f"bundle {directory}")] if wheels_dir.is_dir() else []
    return {"kind": "lock", "lock": ENVIRONMENT_LOCK, "lock_digest": sha256_digest(data), "packages": packages,
            "wheels": wheels}


def layer_tar(directory: Path) -> bytes:
    """The reproducible tar of the bundle's files (see the module docstring)."""
    buffer = io.BytesIO()
    entries = sorted(bundle_files(directory), key=lambda p: p.relative_to(directory).as_posix().encode())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for path in entries:
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.size = len(data)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if os.stat(path).st_mode & 0o100 else 0o644
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def check_tree(directory: Path) -> None:
    """Refuse a bundle directory holding anything but directories and regular files: a symbolic link
    would be followed and its target uploaded (a link to ~/.docker/config.json was), and a FIFO or a
    device would be read. Each is named with what it is (a link, with its target)."""
    refused = []
    for root, dirs, files in os.walk(directory):  # never follows links to directories
        for name in sorted([*dirs, *files]):
            path = Path(root) / name
            if not covered(path.relative_to(directory).as_posix()):
                continue  # never uploaded (bytecode, .git)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                refused.append(f"{path} -> {os.path.realpath(path)} (a symbolic link)")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                refused.append(f"{path} (not a regular file)")
    if refused:
        raise BundleError(f"bundle {directory} holds {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} "
                          f"that cannot be pushed: {'; '.join(refused)}; a bundle holds regular files and "
                          f"directories only: copy a link's target into the bundle if it belongs there")


def build(directory: Path) -> Artifact:
    """Build the artifact of the bundle in DIRECTORY (which must hold a valid bundle.json)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"bundle directory {directory} does not exist or is not a directory")
    check_tree(directory)
    manifest = read_manifest(directory)
    config = {
        "name": manifest["name"],
        "version": manifest["version"],
        "entrypoint": manifest["entrypoint"],
        "environment": environment(directory),
        "content_digest": content_digest(directory),
    }
    return Artifact(config=config, config_bytes=canonical_json(config), layer_bytes=layer_tar(directory))


# Bounds of one unpacked layer. Bytes: the caller's (the worker's cache bound); entries: a bundle is
# a source tree plus wheels (one file each), and every entry is an inode on the pod's cache volume.
MAX_ENTRIES = 10_000
MAX_BYTES = 1024 * 1024 * 1024
PLAIN_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


def layer_bound(max_bytes: int, max_entries: int = MAX_ENTRIES) -> int:
    """The largest layer that can unpack within the bounds: the files' bytes, a header and padding
    (1 KiB) per entry, and the end-of-archive blocks."""
    return max_bytes + 1024 * max_entries + 10 * 1024


def unpack(layer: bytes | Path, target: Path, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
    """Extract a bundle layer (its bytes, or the file holding them) into TARGET: plain files only, no
    path leaving TARGET, modes 0644/0755, at most MAX_ENTRIES entries and MAX_BYTES bytes in all.

    Every member is checked before anything is written: a sparse member (GNU 'S' type or PAX
    GNU.sparse headers) passes isreg() but unpacks its holes as real zeros, so a few KiB of layer
    could fill the cache volume; its declared size is what would be written, so the bound is on
    declared sizes. Written out by hand rather than with `extractall(filter="data")`: the worker
    image's Python (Debian's 3.11.2) predates tarfile's extraction filters (3.11.4)."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    source = {"name": str(layer)} if isinstance(layer, Path) else {"fileobj": io.BytesIO(layer)}
    with tarfile.open(mode="r:", **source) as tar:
        members = []
        total = 0
        for member in tar:  # headers only; stop as soon as a bound is passed
            members.append(member)
            if len(members) > max_entries:
                raise BundleError(f"bundle layer has more than {max_entries} entries: allowed at most "
                                  f"{max_entries}")
            _check_member(member)
            total += member.size
        if total > max_bytes:
            raise BundleError(f"bundle layer unpacks to {total} bytes: allowed at most {max_bytes} "
                              f"(the worker's bundle cache bound, MODELOPS_BUNDLE_CACHE_MAX_MB)")
        duplicates = duplicate_names(os.path.normpath(m.name) for m in members)
        if duplicates:
            raise BundleError(f"bundle layer has duplicate entries: {duplicates[:20]}")
        for member in members:
            dest = root / os.path.normpath(member.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as data, open(dest, "xb") as out:
                shutil.copyfileobj(data, out, CHUNK)
            dest.chmod(0o755 if member.mode & 0o100 else 0o644)


def duplicate_names(names) -> list[str]:
    """The names given more than once, sorted: each name hashed once (a layer has up to 10,000 entries, and a
    pairwise check of a hostile one would take seconds)."""
    counts = collections.Counter(names)
    return sorted(name for name, count in counts.items() if count > 1)


def _check_member(member: tarfile.TarInfo) -> None:
    if member.type not in PLAIN_FILE_TYPES or member.sparse is not None \
            or any(key.startswith("GNU.sparse") for key in member.pax_headers):
        kind = "a sparse file" if member.issparse() or member.sparse is not None or member.type in PLAIN_FILE_TYPES \
            else "not a regular file"
        raise BundleError(f"bundle layer entry {member.name!r} is {kind} (tar type {member.type!r}): allowed "
                          f"plain files only")
    # lexical, no filesystem calls: TARGET is a fresh directory that only ever gets plain files and
    # directories (no links), and each file is created with O_EXCL, which never follows a link
    name = os.path.normpath(member.name)
    if name.startswith("/") or name in (".", "..") or name.startswith("../"):
        raise BundleError(f"bundle layer entry {member.name!r} leaves the bundle directory")
    if not covered(name):
        raise BundleError(f"bundle layer entry {member.name!r} is not covered by the bundle's content digest "
                          f"(bytecode, {', '.join(sorted(IGNORED_DIRS))}): `mops bundle push` never adds one")
