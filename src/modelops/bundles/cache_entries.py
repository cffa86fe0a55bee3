"""What the worker's two caches (pulled OCI bundles, bundle environments) share: an entry's size and
its last use, by which the least recently used entries are evicted past a size bound."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

LAST_USED = "last-used"


def size(path: Path) -> int:
    """Bytes of the regular files under PATH (symlinks, e.g. a venv's interpreter, count nothing).
    Another thread or process may rename or remove PATH, or files in it, meanwhile: what is gone
    counts nothing, never an error."""
    total = 0
    for directory, _dirs, files in os.walk(path):  # os.walk ignores a directory that vanished
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def complete_entries(directory: Path, marker: str) -> dict[str, int]:
    """The complete entries in DIRECTORY (holding MARKER, written last) and their sizes. Names starting
    with "." are entries being staged (renamed into place once complete): never counted."""
    if not directory.is_dir():
        return {}
    sizes = {}
    for entry in directory.iterdir():
        if not entry.name.startswith(".") and (entry / marker).is_file():
            sizes[entry.name] = size(entry)
    return sizes


def mark_used(entry: Path) -> None:
    """Record the time of use in a file (file mtimes tick in jiffies: two uses could tie)."""
    (entry / LAST_USED).write_text(str(time.time_ns()))


def last_used(entry: Path) -> int:
    """When ENTRY was last used (ns), 0 when never recorded."""
    try:
        return int((entry / LAST_USED).read_text())
    except (OSError, ValueError):
        return 0
