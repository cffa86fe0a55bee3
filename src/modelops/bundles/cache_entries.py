"""What the worker's two caches (pulled OCI bundles, bundle environments) share: an entry's size and
its last use, by which the least recently used entries are evicted past a size bound."""

from __future__ import annotations

import time
from pathlib import Path

LAST_USED = "last-used"


def size(path: Path) -> int:
    """Bytes of the regular files under PATH (symlinks, e.g. a venv's interpreter, count nothing)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mark_used(entry: Path) -> None:
    """Record the time of use in a file (file mtimes tick in jiffies: two uses could tie)."""
    (entry / LAST_USED).write_text(str(time.time_ns()))


def last_used(entry: Path) -> int:
    """When ENTRY was last used (ns), 0 when never recorded."""
    try:
        return int((entry / LAST_USED).read_text())
    except (OSError, ValueError):
        return 0
