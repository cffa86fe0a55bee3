"""Signal processes through pidfds, never by a PID number that may already belong to someone else.

Once a process has been reaped its PID can be handed to any new process on the machine; at a high
fork rate that happens within milliseconds. A pidfd refers to one process for its whole life:
signalling it after the process was reaped fails with ESRCH instead of hitting a stranger.

A process group has no pidfd, so a group is only ever signalled by its number while its leader is
known to be unreaped (alive, or a zombie still holding the number): by the leader's parent, right
before it reaps it (`ChildHandle._reap`, `Zygote.reap`).
"""

from __future__ import annotations

import os
import select
import signal


def open_pidfd(pid: int) -> int:
    """A pidfd for `pid`. Only call it while `pid` cannot have been reaped (e.g. its parent asks)."""
    return os.pidfd_open(pid)


def send(pidfd: int, sig: int = signal.SIGKILL) -> bool:
    """Signal the process behind `pidfd`; False when it has already been reaped (or fd is closed)."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, OSError):
        return False


def exited(pidfd: int, timeout: float | None = 0.0) -> bool:
    """True once the process has exited (a zombie counts); waits up to `timeout` (None = forever).

    Never reaps: the exit status stays for the parent, so the PID cannot be reused meanwhile."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000))
    return bool(poller.poll(ms))
