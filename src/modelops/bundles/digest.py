"""Content digest of a bundle: sha256 over relative paths and file bytes, never mtimes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IGNORED_DIRS = {"__pycache__", ".git", ".pytest_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}
CHUNK = 1024 * 1024  # files are hashed and copied this many bytes at a time, never read whole


def covered(relative: str) -> bool:
    """Whether the digest covers the file at RELATIVE (a bundle-relative path): not bytecode, not VCS."""
    parts = relative.replace(os.sep, "/").split("/")
    return not any(part in IGNORED_DIRS for part in parts) and os.path.splitext(parts[-1])[1] not in IGNORED_SUFFIXES


def bundle_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for path in sorted(root.rglob("*")):
        if not covered(path.relative_to(root).as_posix()):
            continue
        if path.is_file():
            files.append(path)
    return files


def sha256_digest(data: bytes) -> str:
    """The OCI form of a blob's digest: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stat_signature(root: Path) -> tuple:
    """Cheap change detector deciding when the digest must be recomputed."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in bundle_files(root))


def content_digest(root: Path) -> str:
    h = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for path in bundle_files(root):
        h.update(path.relative_to(base).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            h.update(size.to_bytes(8, "big"))
            read = 0
            while chunk := handle.read(CHUNK):
                read += len(chunk)
                h.update(chunk)
        if read != size:  # changed while hashed: the digest would not describe any one state of it
            raise OSError(f"{path} changed size while it was hashed ({size} bytes, then {read})")
    return "sha256:" + h.hexdigest()
