"""CPU accounting from /proc: what this process and every process it started have used.

CPU per task counts every process involved: this process (all threads, RUSAGE_SELF),
reaped children (RUSAGE_CHILDREN: cold-spawn children), and every live descendant
(utime+stime+cutime+cstime from /proc: warm children, zygotes and, through the zygotes'
cutime/cstime, the forked children they reaped). The runner takes deltas over a batch.
"""

from __future__ import annotations

import os
import resource

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and everything it started (see module doc)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for pid in descendants(os.getpid()):
        fields = _stat_fields(pid)
        if fields:
            # after ")" : state ppid ... utime(11) stime(12) cutime(13) cstime(14), 0-based
            total += sum(int(fields[k]) for k in (11, 12, 13, 14)) / _CLK_TCK
    return total
