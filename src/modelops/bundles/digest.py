"""Content digest of a bundle: sha256 over relative paths and file bytes, never mtimes."""

from __future__ import annotations

import hashlib
from pathlib import Path

IGNORED_DIRS = {"__pycache__", ".git", ".pytest_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}


def bundle_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS for part in rel.parts) or path.suffix in IGNORED_SUFFIXES:
            continue
        if path.is_file():
            files.append(path)
    return files


def sha256_digest(data: bytes) -> str:
    """The OCI form of a blob's digest: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stat_signature(root: Path) -> tuple:
    """Cheap change detector deciding when the digest must be recomputed."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in bundle_files(root))


def content_digest(root: Path) -> str:
    h = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for path in bundle_files(root):
        h.update(path.relative_to(base).as_posix().encode() + b"\0")
        data = path.read_bytes()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return "sha256:" + h.hexdigest()
